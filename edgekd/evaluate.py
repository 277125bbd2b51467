"""Accuracy and macro-F1 of a PyTorch classifier on one split."""

import torch

from edgekd.data.split import Split
from edgekd.data.tokenize import encode
from edgekd.metrics import classification_metrics
from edgekd.train import predict_logits


def evaluate(model, tokenizer, split: Split, num_classes: int, max_length: int,
             device: torch.device = torch.device("cpu")) -> dict[str, float]:
    ids = encode(tokenizer, split.texts, max_length)
    model.to(device)
    pred = predict_logits(model, ids, tokenizer.pad_token_id, device).argmax(-1)
    model.cpu()
    return {k: round(v, 6) for k, v in classification_metrics(pred, split.labels, num_classes).items()}
