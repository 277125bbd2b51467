"""Tiny causal language models and plain-text documents for the causal-lm task family.

Nothing here touches the network: the tokenizer is a word-level vocabulary with an EOS token, the
models are random Llama / Qwen2 configs (two decoder layouts; both use grouped-query attention), and
the documents follow a small grammar a model can learn in a few dozen steps.
"""

import random
from pathlib import Path

SUBJECTS = "the cat|a dog|the bird|my friend|the child|a farmer".split("|")
VERBS = "sees|likes|finds|chases|feeds|draws".split("|")
OBJECTS = "the ball|a fish|the tree|an apple|the river|a house".split("|")
LM_SPECIAL = ["<pad>", "<unk>", "<eos>"]
LM_WORDS = sorted({w for phrase in SUBJECTS + VERBS + OBJECTS for w in phrase.split()} | {".", "and", "then"})


def make_documents(n: int, seed: int = 0) -> list[str]:
    """``n`` short documents of 2-5 grammatical sentences (subject verb object .)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        sentences = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} ."
                     for _ in range(rng.randint(2, 5))]
        docs.append(" then ".join(sentences))
    return docs


def write_documents(folder: Path, n: int, seed: int = 0) -> Path:
    """A folder of .txt files (one document each) in two topic subfolders, like the BBC corpus."""
    for i, doc in enumerate(make_documents(n, seed)):
        path = folder / ("news" if i % 2 else "sport") / f"{i:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(doc + "\n", encoding="utf-8")
    return folder


def build_lm_tokenizer(folder: Path):
    """A word-level tokenizer (whitespace split) with <pad>, <unk> and <eos>, saved into ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(LM_SPECIAL + LM_WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>",
                                  model_max_length=128)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    return tok


def tiny_causal_lm_config(arch: str = "llama", vocab_size: int = len(LM_SPECIAL) + len(LM_WORDS)):
    """Hidden 64, 2 layers, 4 query heads of 16 sharing 2 KV heads, FFN 128, tied embeddings (ONNX Runtime
    GenAI's attention needs a head size that is a multiple of 16)."""
    from transformers import LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  tie_word_embeddings=True, pad_token_id=0, eos_token_id=2, bos_token_id=2)
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    raise ValueError(arch)


def make_tiny_causal_lm_dir(folder: Path, arch: str = "llama", seed: int = 0) -> Path:
    """A saved tiny random causal LM with the word-level tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_causal_lm_config(arch))
    model.save_pretrained(folder)
    build_lm_tokenizer(folder)
    return folder
