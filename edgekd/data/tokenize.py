"""Tokenise once, pad per batch (dynamic padding): a batch is only as long as its longest text."""

import random
from collections.abc import Iterator

import torch

from edgekd.ort import length_sorted_batches

# Training batches are drawn from pools of this many batches, sorted by length inside each pool:
# batches hold texts of similar length (little padding) while the order stays random.
GROUP_POOL_BATCHES = 50


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


def batch_order(lengths: list[int], batch_size: int, shuffle: bool = False, seed: int = 0,
                group_by_length: bool = False) -> list[list[int]]:
    """Example indices per batch.

    shuffle=False: the same length-sorted batches as ONNX Runtime inference when ``group_by_length``
    (callers put results back in order), else in order. shuffle=True: a seeded permutation; with
    ``group_by_length`` each pool of GROUP_POOL_BATCHES batches is sorted by length, cut into
    batches, and the batches are shuffled.
    """
    if group_by_length and not shuffle:
        return [b.tolist() for b in length_sorted_batches(lengths, batch_size)]
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(order)
    if group_by_length:
        pool = batch_size * GROUP_POOL_BATCHES
        order = [i for s in range(0, len(order), pool)
                 for i in sorted(order[s : s + pool], key=lambda i: lengths[i], reverse=True)]
    out = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if shuffle and group_by_length:
        rng.shuffle(out)
    return out


def batches(
    ids: list[list[int]], batch_size: int, pad_id: int, shuffle: bool = False, seed: int = 0,
    group_by_length: bool = False,
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Yield (example indices, padded batch); see :func:`batch_order` for the order."""
    for idx in batch_order([len(x) for x in ids], batch_size, shuffle, seed, group_by_length):
        yield idx, pad_batch([ids[i] for i in idx], pad_id)
