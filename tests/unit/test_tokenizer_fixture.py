"""The fixture tokenizer must really tokenise: tests that feed it text are only as good as its ids."""

from transformers import AutoTokenizer

from tests.conftest import NEGATIVE, POSITIVE, VOCAB, build_tokenizer


def _word_ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_sentiment_words_get_their_own_ids(tmp_path):
    tok = build_tokenizer(tmp_path / "tok")
    assert len(tok) == len(VOCAB)
    for word in POSITIVE + NEGATIVE:
        assert _word_ids(tok, word) == [VOCAB.index(word)], word  # not [UNK], not split
    assert _word_ids(tok, "A Witty, CHARMING film!") == [VOCAB.index(w) for w in "a witty , charming film !".split()]
    assert _word_ids(tok, "xylophone") == [tok.unk_token_id]  # the vocabulary has no ## continuation pieces


def test_special_tokens_padding_and_reload(tmp_path):
    for tok in (build_tokenizer(tmp_path / "tok"), AutoTokenizer.from_pretrained(tmp_path / "tok")):
        assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id) == (0, 1, 2, 3)
        batch = tok(["good film", "a dull tedious plot"], padding=True)
        first, second = batch["input_ids"]
        assert first[0] == 2 and first[3] == 3 and first[4:] == [0] * (len(second) - 4)  # [CLS] good film [SEP] [PAD]...
        assert batch["attention_mask"][0] == [1] * 4 + [0] * (len(second) - 4)
        assert tok.model_max_length == 64
