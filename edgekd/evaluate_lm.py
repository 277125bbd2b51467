"""Perplexity, next-token accuracy and teacher agreement of a PyTorch causal LM on fixed token windows.

Windows are equal-length lists of token ids (no padding): a window of L tokens gives L - 1 predictions
(logits at t against token t + 1), and every prediction counts once, so perplexity is exp of the mean
token NLL over all predicted tokens, independent of the batch size. Log-softmax runs in float32 even
for a bf16 model, and sums are accumulated in Python floats (double). Teacher-forced top-1 agreement
with a reference model is the gate the decoder notes recommend over greedy-sequence equality.
"""

import logging

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.errors import DataError

log = logging.getLogger(__name__)


def _check_windows(windows: list[list[int]], vocab_size: int | None) -> int:
    """The common window length; DataError naming the first bad window otherwise."""
    if not windows:
        raise DataError("lm evaluation: no windows given; pass at least one window of >= 2 token ids")
    length = len(windows[0])
    if length < 2:
        raise DataError(f"lm evaluation: window 0 has {length} tokens; windows need >= 2 "
                        "(one prediction needs a target)")
    for i, w in enumerate(windows):
        if len(w) != length:
            raise DataError(f"lm evaluation: window {i} has {len(w)} tokens, window 0 has {length}; "
                            "all windows must have the same length (no padding)")
        if vocab_size is not None and w and (max(w) >= vocab_size or min(w) < 0):
            raise DataError(f"lm evaluation: window {i} holds token id {max(w) if max(w) >= vocab_size else min(w)}, "
                            f"outside the model's vocabulary 0..{vocab_size - 1}")
    return length


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _move(model: nn.Module, device: torch.device) -> None:
    """``model.to(device)`` unless it is there already: a model sharded by FSDP (edgekd.distributed) cannot
    swap its parameters inside inference_mode, and needs no move."""
    here, device = _device_of(model), torch.device(device)
    if here.type != device.type or (device.index is not None and here.index != device.index):
        model.to(device)


@torch.inference_mode()
def lm_metrics(model: nn.Module, windows: list[list[int]], batch_size: int = 8,
               device: torch.device = torch.device("cpu"), reference: nn.Module | None = None) -> dict[str, float]:
    """{"perplexity", "nll", "accuracy", "tokens"} (+ "agreement" with ``reference``) on ``windows``.

    nll: mean next-token negative log-likelihood (nats) over every predicted token; perplexity = exp(nll);
    accuracy: share of predictions whose argmax is the next token; tokens: predictions counted
    (len(windows) * (window length - 1)); agreement: share of positions where ``model`` and ``reference``
    (e.g. the teacher; same vocabulary) have the same argmax. Both models run in eval mode on ``device``
    and go back to their own device and train/eval mode afterwards.
    """
    if batch_size < 1:
        raise DataError(f"lm evaluation: batch_size {batch_size} is not allowed; use >= 1")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    length = _check_windows(windows, vocab)
    models = [model] + ([reference] if reference is not None else [])
    homes = [(_device_of(m), m.training) for m in models]
    for m in models:
        _move(m, device)
        m.eval()
    nll_sum, correct, agree, count = 0.0, 0, 0, 0
    try:
        for start in range(0, len(windows), batch_size):
            ids = torch.tensor(windows[start:start + batch_size], dtype=torch.long, device=device)  # [b, L]
            # no attention mask: windows are unpadded; no KV cache: one forward per window
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()  # [b, L-1, V]
            targets = ids[:, 1:]  # [b, L-1]
            nll_sum += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
            pred = logits.argmax(-1)  # [b, L-1]
            correct += int((pred == targets).sum())
            count += targets.numel()
            if reference is not None:
                ref_logits = reference(input_ids=ids, use_cache=False).logits[:, :-1]
                if ref_logits.shape != logits.shape:
                    raise DataError(f"lm evaluation: reference logits {tuple(ref_logits.shape)} and model logits "
                                    f"{tuple(logits.shape)} differ; agreement needs the same vocabulary")
                agree += int((ref_logits.float().argmax(-1) == pred).sum())
    finally:
        for m, (home, training) in zip(models, homes):
            _move(m, home)
            m.train(training)
    nll = nll_sum / count
    out = {"perplexity": float(torch.tensor(nll, dtype=torch.float64).exp()), "nll": nll,
           "accuracy": correct / count, "tokens": count}
    if reference is not None:
        out["agreement"] = agree / count
    log.info("lm metrics on %d windows of %d tokens: %s", len(windows), length,
             ", ".join(f"{k} {v:.4g}" for k, v in out.items()))
    return out
