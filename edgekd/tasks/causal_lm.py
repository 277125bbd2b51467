"""Causal language modelling: plain documents, a decoder LM, validation perplexity selects.

Documents are split whole (edgekd.data.text); training and evaluation read each split as one token
stream with an EOS token after every document, cut into windows of model.max_length tokens, so
every window is full and needs no padding.
"""

import logging
from pathlib import Path

import torch

from edgekd.data.config import TextDataConfig
from edgekd.errors import ConfigError
from edgekd.train import Selection

log = logging.getLogger(__name__)
PERPLEXITY = Selection("perplexity", higher_is_better=False)
EVAL_BATCH = 8


def causal_lm_loss(model, batch, idx, labels) -> torch.Tensor:
    """Next-token cross-entropy over the window (transformers shifts the labels by one inside)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 labels=batch["input_ids"]).loss.float()


def load_causal_lm(source: str):
    """(model in float32, tokenizer); a folder without a causal-LM head or an EOS token is refused in one line."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from edgekd.preflight import causal_lm_head_problem

    from edgekd.models.io import load_tokenizer

    config = AutoConfig.from_pretrained(source)
    problem = causal_lm_head_problem(config)
    if problem:  # (preflight checked local folders; this also covers hub models, once downloaded)
        raise ConfigError(f"model {source}: {problem}")
    tokenizer = load_tokenizer(source)
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"model {source}: the tokenizer has no EOS token; causal-lm training puts one after every "
                          "document (set eos_token in tokenizer_config.json)")
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    return model, tokenizer


def separator_id(tokenizer, splits) -> int | None:
    """The id of data.separator_token (None: the tokenizer's EOS); a token the vocabulary lacks is refused."""
    token = splits.separator_token
    if token is None:
        return None
    token_id = tokenizer.get_vocab().get(token)  # (not convert_tokens_to_ids: SmolLM2's unk token is <|endoftext|>)
    if token_id is None:
        raise ConfigError(f"data.separator_token: {token!r} is not a token of the model's vocabulary; use one of its "
                          f"special tokens (EOS: {tokenizer.eos_token!r}) or leave it unset")
    return token_id


class CausalLMTask:
    name = "causal-lm"
    selection = PERPLEXITY
    export_task = "text-generation-with-past"

    def resolve_data(self, source: str):
        from edgekd.assets import resolve_text_source

        return resolve_text_source(source)

    def prepare_data(self, data_cfg: TextDataConfig, source, seed: int):
        from edgekd.data.text import read_documents, split_documents

        docs = read_documents(Path(source), data_cfg.text_column, data_cfg.fallback_encoding)
        splits = split_documents(docs, data_cfg.validation_fraction, data_cfg.test_fraction, seed,
                                 where=data_cfg.source)
        if data_cfg.max_train_documents is not None:
            splits.train = splits.train[: data_cfg.max_train_documents]
        splits.validation_windows = data_cfg.validation_windows
        splits.separator_token = data_cfg.separator_token
        sizes = {name: len(getattr(splits, name)) for name in ("train", "validation", "test")}
        chars = {name: sum(len(d) for d in getattr(splits, name)) for name in sizes}
        metrics = {"documents": sizes, "characters": chars}
        line = (f"{sizes['train']} train / {sizes['validation']} validation / {sizes['test']} test documents "
                f"({chars['train'] / 1e6:.2f}M / {chars['validation'] / 1e6:.2f}M / {chars['test'] / 1e6:.2f}M "
                "characters)")
        return splits, metrics, line

    def save_splits(self, splits, folder: Path) -> None:
        from edgekd.data.text import save_text_splits

        save_text_splits(splits, folder)

    def load_splits(self, folder: Path):
        from edgekd.data.text import load_text_splits

        return load_text_splits(folder)

    def load_for_training(self, source: str, splits, finetune: bool):
        return load_causal_lm(source)

    def windows(self, tokenizer, splits, name: str, max_length: int) -> list[list[int]]:
        """Split ``name`` as one token stream (a separator after every document) cut into full windows."""
        from edgekd.data.text import token_windows

        return token_windows(tokenizer, splits[name], max_length, eos_id=separator_id(tokenizer, splits), where=name)

    def validation_windows(self, tokenizer, splits, max_length: int) -> list[list[int]]:
        """The validation windows that score epochs and stages (data.validation_windows of them)."""
        from edgekd.data.text import evenly_spaced

        return evenly_spaced(self.windows(tokenizer, splits, "validation", max_length), splits.validation_windows)

    def finetune(self, model, tokenizer, splits, cfg, seed: int, max_length: int, device):
        from edgekd.teacher.core import settings_from
        from edgekd.train import fit

        torch.manual_seed(seed)
        train = self.windows(tokenizer, splits, "train", max_length)
        val = self.validation_windows(tokenizer, splits, max_length)
        settings = settings_from(cfg, seed, device)
        log.info("training the teacher LM on %s: %d train / %d validation windows of %d tokens", device, len(train),
                 len(val), max_length)
        return fit(model, causal_lm_loss, train, None, val, None, tokenizer.eos_token_id, settings, desc="teacher",
                   evaluate=lambda m: self.scores(m, val, device), selection=self.selection)

    def scores(self, model, windows: list[list[int]], device=None) -> dict[str, float]:
        """Validation perplexity (selects checkpoints) and next-token accuracy on ``windows``."""
        from edgekd.evaluate_lm import lm_metrics

        # Small batches: logits are [batch, max_length, vocab] floats (8 x 256 x 49,152 x 4 bytes = 400 MB for SmolLM2).
        scores = lm_metrics(model, windows, batch_size=EVAL_BATCH, device=device or torch.device("cpu"))
        return {"perplexity": round(float(scores["perplexity"]), 4),
                "next_token_accuracy": round(float(scores["accuracy"]), 6)}

    def validate(self, model, tokenizer, splits, max_length: int) -> dict[str, float]:
        return self.scores(model, self.validation_windows(tokenizer, splits, max_length))

    def save(self, model, tokenizer, folder: Path) -> None:
        for p in model.parameters():  # pruned or sliced tensors must be contiguous for safetensors
            p.data = p.data.contiguous()
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
