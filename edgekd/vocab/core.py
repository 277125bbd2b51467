"""Trim a WordPiece model's vocabulary to the tokens a task uses: plain functions, no pipeline.

Why tokenisation cannot change for the selection texts: WordPiece matches the longest vocabulary
piece at each position of a word. Every piece those texts produced is kept, and a smaller vocabulary
offers no longer match than the kept piece, so each word splits exactly as before; a word that was
[UNK] (no piece matched somewhere) still finds no piece. Only the ids change, by ``old_to_new``.
"""

import copy
import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgekd.data.tokenize import pad_batch
from edgekd.errors import ConfigError
from edgekd.vocab.config import VocabConfig

log = logging.getLogger(__name__)
# BERT's [unused0]..[unused993]: a bracketed name that is not a special token never comes out of a
# BERT pre-tokenizer (it splits '[' off), so spending the extra_tokens budget on it buys nothing.
PLACEHOLDER = re.compile(r"^\[[^\[\]\s]+\]$")


@dataclass
class TrimReport:
    tokens_before: int
    tokens_after: int
    embedding_dim: int  # E: the word-embedding width (ELECTRA's may differ from the hidden size)
    old_to_new: dict[int, int]

    @property
    def embedding_bytes_before(self) -> int:
        return self.tokens_before * self.embedding_dim * 4  # fp32

    @property
    def embedding_bytes_after(self) -> int:
        return self.tokens_after * self.embedding_dim * 4


def wordpiece_json(tokenizer) -> dict:
    """The fast tokenizer's backend as JSON; anything but a WordPiece model is refused in one line."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"vocab: {type(tokenizer).__name__} is not a fast tokenizer (no tokenizer.json); "
                          "vocabulary trimming rewrites tokenizer.json and supports WordPiece tokenizers only")
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    kind = data["model"].get("type")
    if kind != "WordPiece":
        raise ConfigError(f"vocab: the tokenizer's model type is {kind}; only WordPiece tokenizers (BERT, DistilBERT, "
                          "ELECTRA, MPNet) can be trimmed")
    return data


def _used_ids(tokenizer, texts: list[str], batch: int = 1024) -> set[int]:
    used: set[int] = set()
    for start in range(0, len(texts), batch):
        # No truncation: keeping the tail of a long text costs a few rows and covers any max_length.
        enc = tokenizer(texts[start : start + batch], add_special_tokens=False, truncation=False, verbose=False)
        for ids in enc["input_ids"]:
            used.update(ids)
    return used


def kept_token_ids(tokenizer, texts: list[str], cfg: VocabConfig) -> list[int]:
    """Sorted ids to keep: those ``texts`` use, the special and added tokens, every id up to the pad id
    (so the pad id stays put: some models derive position ids from it), the single characters with
    their ## continuations when ``cfg.keep_characters``, then ``cfg.extra_tokens`` more, lowest ids first."""
    data = wordpiece_json(tokenizer)
    vocab: dict[str, int] = data["model"]["vocab"]
    prefix = data["model"].get("continuing_subword_prefix", "##")
    used = _used_ids(tokenizer, texts)
    special = set(tokenizer.all_special_ids) | {t["id"] for t in data.get("added_tokens", [])}
    keep = used | special | set(range((tokenizer.pad_token_id or 0) + 1))
    characters = set()
    if cfg.keep_characters:
        characters = {i for token, i in vocab.items()
                      if len(token) == 1 or (token.startswith(prefix) and len(token) == len(prefix) + 1)}
        keep |= characters
    extra = []
    if cfg.extra_tokens:
        by_id = sorted((i, token) for token, i in vocab.items() if i not in keep)
        extra = [i for i, token in by_id if not PLACEHOLDER.match(token)][: cfg.extra_tokens]
        keep |= set(extra)
    log.info("vocab: %d tokens used by %d texts, %d special, %d characters (%d not used), %d extra: %d of %d kept",
             len(used), len(texts), len(special), len(characters), len(characters - used), len(extra), len(keep),
             len(vocab))
    if cfg.max_vocab is not None and len(keep) > cfg.max_vocab:
        raise ConfigError(f"vocab max_vocab: {len(keep)} tokens would be kept ({len(used)} used by the selection "
                          f"texts, {len(characters - used)} more characters, {len(extra)} extra), above max_vocab="
                          f"{cfg.max_vocab}; raise it, lower extra_tokens or set keep_characters: false")
    return sorted(keep)


def _remap_post_processor(proc: dict | None, old_to_new: dict[int, int]) -> None:
    """Rewrite the ids of [CLS]/[SEP] (and the like) that the post-processor inserts, in place."""
    if proc is None:
        return
    kind = proc.get("type")
    if kind == "TemplateProcessing":
        for entry in proc["special_tokens"].values():
            entry["ids"] = [old_to_new[i] for i in entry["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            token, old = proc[key]
            proc[key] = [token, old_to_new[old]]
    elif kind == "Sequence":
        for inner in proc["processors"]:
            _remap_post_processor(inner, old_to_new)
    elif kind != "ByteLevel":
        raise ConfigError(f"vocab: post-processor {kind} is not supported; expected TemplateProcessing, "
                          "BertProcessing, RobertaProcessing, ByteLevel or a Sequence of them")


def trimmed_tokenizer_json(data: dict, old_to_new: dict[int, int]) -> dict:
    """A copy of the backend JSON whose vocabulary, added tokens, post-processor and padding use the new ids."""
    data = copy.deepcopy(data)
    data["model"]["vocab"] = {t: old_to_new[i] for t, i in data["model"]["vocab"].items() if i in old_to_new}
    for token in data.get("added_tokens", []):
        token["id"] = old_to_new[token["id"]]
    _remap_post_processor(data.get("post_processor"), old_to_new)
    if data.get("padding"):
        data["padding"]["pad_id"] = old_to_new[data["padding"]["pad_id"]]
    return data


def _build_tokenizer(tokenizer, data: dict, old_to_new: dict[int, int]):
    """The same tokenizer class and settings with the new ids, reloaded from a folder (the way that works
    on transformers 4.x and 5.x alike: 5.x ignores ``BertTokenizerFast(vocab_file=...)``)."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="edgekd-vocab-") as tmp:
        folder = Path(tmp)
        tokenizer.save_pretrained(folder)
        (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
        vocab_txt = folder / "vocab.txt"
        if vocab_txt.is_file():  # one token per line, line number = id
            by_id = sorted((i, t) for t, i in data["model"]["vocab"].items())
            vocab_txt.write_text("".join(f"{t}\n" for _, t in by_id), encoding="utf-8")
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        if "added_tokens_decoder" in config:
            config["added_tokens_decoder"] = {str(old_to_new[int(i)]): entry
                                              for i, entry in config["added_tokens_decoder"].items()}
        config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2))
        new = AutoTokenizer.from_pretrained(folder)
        new.name_or_path = tokenizer.name_or_path
    return new


def trim_vocabulary(model: nn.Module, tokenizer, keep_ids: list[int]):
    """(trimmed copy of ``model``, its tokenizer, TrimReport); ``model`` and ``tokenizer`` are left untouched.

    Row ``new`` of the new word-embedding matrix [V_new, E] is row ``keep_ids[new]`` of the old one.
    """
    data = wordpiece_json(tokenizer)
    old_size = max(data["model"]["vocab"].values()) + 1  # rows of the embedding it was trained with
    keep_ids = sorted(set(keep_ids))
    missing = sorted(set(tokenizer.all_special_ids) - set(keep_ids))
    if missing or keep_ids[0] < 0 or keep_ids[-1] >= old_size:
        raise ConfigError(f"vocab: keep_ids must lie in 0..{old_size - 1} and include every special token id "
                          f"(missing {missing})")
    old_to_new = {old: new for new, old in enumerate(keep_ids)}
    if model.get_output_embeddings() is not None:
        raise ConfigError(f"vocab: {type(model).__name__} has an output layer over the vocabulary (a language-model "
                          "head); only classifiers, whose vocabulary is the input embedding alone, can be trimmed")
    old_embedding = model.get_input_embeddings()  # nn.Embedding [V_old, E]
    if old_embedding.num_embeddings != old_size:
        raise ConfigError(f"vocab: the model has {old_embedding.num_embeddings} word embeddings but its tokenizer "
                          f"{old_size} tokens; trim only a model whose embedding rows match its tokenizer")
    pad = tokenizer.pad_token_id
    if pad is not None and old_to_new[pad] != pad:
        raise ConfigError(f"vocab: the pad id would move from {pad} to {old_to_new[pad]}; keep every id up to it")

    trimmed = copy.deepcopy(model)
    index = torch.tensor(keep_ids, dtype=torch.long, device=old_embedding.weight.device)
    weight = old_embedding.weight.detach()[index].clone()  # [V_new, E]
    embedding = nn.Embedding(len(keep_ids), weight.shape[1], padding_idx=old_embedding.padding_idx,
                             device=weight.device, dtype=weight.dtype)
    embedding.weight = nn.Parameter(weight, requires_grad=old_embedding.weight.requires_grad)
    trimmed.set_input_embeddings(embedding)
    trimmed.config.vocab_size = len(keep_ids)
    for key, value in list(trimmed.config.to_dict().items()):
        if key.endswith("_token_id") and isinstance(value, int):
            if value not in old_to_new:
                raise ConfigError(f"vocab: the model config's {key}={value} is not among the kept ids")
            setattr(trimmed.config, key, old_to_new[value])

    new_tokenizer = _build_tokenizer(tokenizer, trimmed_tokenizer_json(data, old_to_new), old_to_new)
    _check_tokenizer(tokenizer, new_tokenizer, keep_ids, old_to_new)
    report = TrimReport(old_size, len(keep_ids), weight.shape[1], old_to_new)
    log.info("vocab: %d -> %d tokens, word embeddings %.1f -> %.1f MB (fp32)", old_size, len(keep_ids),
             report.embedding_bytes_before / 1e6, report.embedding_bytes_after / 1e6)
    return trimmed, new_tokenizer, report


def _check_tokenizer(old, new, keep_ids: list[int], old_to_new: dict[int, int]) -> None:
    """The reloaded tokenizer has the kept tokens at their new ids and the same special tokens."""
    if len(new) != len(keep_ids) or new.convert_ids_to_tokens(list(range(len(keep_ids)))) != \
            old.convert_ids_to_tokens(keep_ids):
        raise RuntimeError(f"trimmed tokenizer has {len(new)} tokens in a different order than the {len(keep_ids)} "
                           "kept ones")
    for name in ("pad_token_id", "unk_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
        before, after = getattr(old, name, None), getattr(new, name, None)
        if (None if before is None else old_to_new[before]) != after:
            raise RuntimeError(f"trimmed tokenizer: {name} is {after}, expected {old_to_new.get(before)}")


def check_identical_tokenisation(old_tok, new_tok, old_to_new: dict[int, int], texts: list[str],
                                 max_length: int) -> dict:
    """How many ``texts`` tokenise (as the pipeline does: truncated, special tokens added) to exactly
    the remapped old ids; ``first_mismatch`` is the index of the first that does not (None if all do)."""
    identical, first_mismatch = 0, None
    for start in range(0, len(texts), 1024):
        chunk = texts[start : start + 1024]
        before = old_tok(chunk, truncation=True, max_length=max_length)["input_ids"]
        after = new_tok(chunk, truncation=True, max_length=max_length)["input_ids"]
        for offset, (old_ids, new_ids) in enumerate(zip(before, after)):
            if [old_to_new.get(i, -1) for i in old_ids] == new_ids:
                identical += 1
            elif first_mismatch is None:
                first_mismatch = start + offset
    return {"texts": len(texts), "identical": identical, "first_mismatch": first_mismatch}


@torch.no_grad()
def max_logit_difference(old_model: nn.Module, new_model: nn.Module, old_ids: list[list[int]],
                         new_ids: list[list[int]], pad_id: int, batch_size: int = 32) -> float:
    """Largest |logit difference| between the two models, each fed its own ids of the same texts."""
    old_model.eval()
    new_model.eval()
    worst = 0.0
    for start in range(0, len(old_ids), batch_size):
        a = pad_batch(old_ids[start : start + batch_size], pad_id)
        b = pad_batch(new_ids[start : start + batch_size], pad_id)
        diff = (old_model(**a).logits - new_model(**b).logits).abs().max().item()
        worst = max(worst, diff)
    return worst
