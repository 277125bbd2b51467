"""Length-grouped batching: every example exactly once, seeded, less padding, results in input order."""

import random

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from edgekd.data.tokenize import batch_order
from edgekd.ort import length_sorted_batches
from edgekd.train import predict_logits


def _lengths(n=1000, seed=0):
    rng = random.Random(seed)
    return [rng.randint(3, 120) for _ in range(n)]


def _padded_tokens(lengths, order):
    return sum(len(b) * max(lengths[i] for i in b) for b in order)


def test_grouped_training_batches_cover_each_example_once_and_pad_less():
    lengths = _lengths()
    plain = batch_order(lengths, 32, shuffle=True, seed=1)
    grouped = batch_order(lengths, 32, shuffle=True, seed=1, group_by_length=True)
    for order in (plain, grouped):
        assert sorted(i for b in order for i in b) == list(range(len(lengths)))
        assert all(len(b) <= 32 for b in order)
    assert _padded_tokens(lengths, grouped) < 0.8 * _padded_tokens(lengths, plain)
    assert grouped == batch_order(lengths, 32, shuffle=True, seed=1, group_by_length=True)
    assert grouped != batch_order(lengths, 32, shuffle=True, seed=2, group_by_length=True)
    # the batch order is still random: not longest-first across the whole epoch
    firsts = [max(lengths[i] for i in b) for b in grouped]
    assert firsts != sorted(firsts, reverse=True)


def test_inference_order_is_sorted_by_length():
    lengths = _lengths(100)
    torch_batches = batch_order(lengths, 16, group_by_length=True)
    assert [lengths[i] for b in torch_batches for i in b] == sorted(lengths)
    # PyTorch and ONNX Runtime evaluation see the same batches (dynamic int8 depends on them)
    assert torch_batches == [b.tolist() for b in length_sorted_batches(lengths, 16)]


def test_predict_logits_returns_rows_in_input_order(tiny_bert_dir):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    rng = random.Random(0)
    ids = [[2] + [rng.randint(5, 50) for _ in range(rng.randint(1, 20))] + [3] for _ in range(23)]
    batched = predict_logits(model, ids, pad_id=0, device=torch.device("cpu"), batch_size=4)
    with torch.inference_mode():
        one_by_one = np.concatenate([model(input_ids=torch.tensor([x])).logits.numpy() for x in ids])
    assert batched.shape == (23, model.config.num_labels)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-4)
