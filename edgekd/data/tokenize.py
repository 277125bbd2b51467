"""Tokenise once, pad per batch (dynamic padding): a batch is only as long as its longest text."""

import random
from collections.abc import Iterator

import torch


def encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length``, no padding."""
    return tokenizer(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]


def pad_batch(ids: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask, both [batch, longest]."""
    longest = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), longest), dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = torch.tensor(x)
        mask[row, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def batches(
    ids: list[list[int]], batch_size: int, pad_id: int, shuffle: bool = False, seed: int = 0
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Yield (example indices, padded batch); shuffled by ``seed`` when ``shuffle``."""
    order = list(range(len(ids)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield idx, pad_batch([ids[i] for i in idx], pad_id)
