"""Token-level distillation losses for causal (decoder) language models.

Every loss takes logits [B, T, V] and a mask [B, T] of the positions that count, and returns the mean
over counted tokens (one scalar). Logits at position t predict token t + 1, so the mask is the
attention mask shifted for next-token prediction (:func:`next_token_mask`). Counted positions are
gathered first ([N, V], N = counted tokens): padded positions cost nothing and whatever they hold,
even inf or NaN, cannot reach the loss or its gradient. Everything is computed in float32 (a bf16
log-softmax over a 49k vocabulary is visibly off). The teacher's logits should come from a
``no_grad`` forward; the losses do not detach them.

Why several divergences: forward KL (mean-seeking, the classic Hinton loss), reverse KL (mode-seeking,
MiniLLM), the generalised Jensen-Shannon divergence of TRL's GKD trainer (interpolates between them),
and a top-k KL for teacher logits cached offline as top-k (DistillKit-style), which turns a 49k-wide
teacher row into a few dozen numbers.
"""

import logging
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F

from edgekd.errors import ConfigError

log = logging.getLogger(__name__)

LossKind = Literal["forward_kl", "reverse_kl", "jsd", "topk_kl"]
LOSS_KINDS: tuple[str, ...] = ("forward_kl", "reverse_kl", "jsd", "topk_kl")
# bytes one cached token takes: k fp16 values + k int32 indices
TOPK_BYTES_PER_ENTRY = 2 + 4


def next_token_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] mask of logit positions that predict a real token: t and t + 1 are both attended.

    The last position predicts nothing inside the window, so it is always 0. Works for left or right padding.
    """
    am = attention_mask.bool()
    out = torch.zeros_like(am)
    out[:, :-1] = am[:, :-1] & am[:, 1:]
    return out


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"temperature: {temperature} is not allowed; use a number > 0")


def _counted(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Rows [N, V] (float32) of ``logits`` [B, T, V] where ``mask`` [B, T] is set."""
    if logits.shape[:2] != mask.shape:
        raise ValueError(f"mask {tuple(mask.shape)} does not match logits {tuple(logits.shape)}")
    return logits[mask.bool()].float()


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ConfigError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                          f"{tuple(teacher_logits.shape)} differ; distillation needs the same vocabulary and tokens")


def _mean(per_token: torch.Tensor) -> torch.Tensor:
    # per_token [N]; with no counted token the loss is 0 (and still part of the graph)
    return per_token.sum() / max(1, per_token.numel())


def _log_probs(student_logits, teacher_logits, mask, temperature) -> tuple[torch.Tensor, torch.Tensor]:
    _check_temperature(temperature)
    _check_pair(student_logits, teacher_logits)
    log_s = F.log_softmax(_counted(student_logits, mask) / temperature, dim=-1)  # [N, V]
    log_t = F.log_softmax(_counted(teacher_logits, mask) / temperature, dim=-1)  # [N, V]
    return log_s, log_t


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row, [N, V] log-probabilities -> [N].

    Where p = 0 (a -inf logit, e.g. a masked vocabulary entry) the term counts as 0: F.kl_div gives NaN
    there (0 * -inf). Clamping log p to the most negative float keeps the product 0 and its gradient finite.
    """
    return (log_p.exp() * (log_p.clamp_min(torch.finfo(log_p.dtype).min) - log_q)).sum(-1)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(p_t || p_s) at temperature T, mean over counted tokens (the teacher's view: mean-seeking)."""
    log_s, log_t = _log_probs(student_logits, teacher_logits, mask, temperature)
    return _mean(_kl(log_t, log_s)) * temperature ** 2


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(p_s || p_t) at temperature T, mean over counted tokens (the student's view: mode-seeking)."""
    log_s, log_t = _log_probs(student_logits, teacher_logits, mask, temperature)
    return _mean(_kl(log_s, log_t)) * temperature ** 2


def generalised_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                    temperature: float = 1.0, beta: float = 0.5) -> torch.Tensor:
    """TRL GKD's generalised JSD times T^2, mean over counted tokens.

    With M = beta * p_t + (1 - beta) * p_s: JSD_beta = beta * KL(p_t || M) + (1 - beta) * KL(p_s || M).
    Convention (TRL's): beta = 0 is defined as forward KL(p_t || p_s) and beta = 1 as reverse KL(p_s || p_t),
    exactly. Those are not the limits of the formula itself, which goes to 0 at both ends; its scaled limits
    are: JSD_beta / beta -> forward KL as beta -> 0, and JSD_beta / (1 - beta) -> reverse KL as beta -> 1.
    So the loss scale jumps at the ends. beta = 0.5 is the symmetric Jensen-Shannon divergence
    (<= log 2 per token at T = 1).
    """
    if not 0.0 <= beta <= 1.0:
        raise ConfigError(f"beta: {beta} is not allowed; use a number in [0, 1]")
    if beta == 0.0:
        return forward_kl(student_logits, teacher_logits, mask, temperature)
    if beta == 1.0:
        return reverse_kl(student_logits, teacher_logits, mask, temperature)
    log_s, log_t = _log_probs(student_logits, teacher_logits, mask, temperature)
    b = torch.tensor(beta, dtype=log_s.dtype, device=log_s.device)
    # log M computed in log space: [2, N, V] -> [N, V]
    log_m = torch.logsumexp(torch.stack([log_t + torch.log(b), log_s + torch.log1p(-b)]), dim=0)
    per_token = beta * _kl(log_t, log_m) + (1.0 - beta) * _kl(log_s, log_m)
    return _mean(per_token) * temperature ** 2


def topk_kl(student_logits: torch.Tensor, teacher_topk_values: torch.Tensor, teacher_topk_indices: torch.Tensor,
            mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(q_t || p_s) over the teacher's cached top-k tokens, mean over counted tokens.

    q_t is the teacher's distribution renormalised over its top-k: softmax(values / T) over the k
    entries (the probability mass outside them is dropped, not spread). p_s is the student's full-vocabulary
    softmax at T, read at the k indices (not renormalised), so the loss is >= 0 and also pushes the student's
    mass into the teacher's top-k. With k = V it equals :func:`forward_kl`.
    values [B, T, k] (any float dtype, e.g. fp16 from :func:`topk_cache`), indices [B, T, k] (any int dtype).
    """
    _check_temperature(temperature)
    if teacher_topk_values.shape != teacher_topk_indices.shape or \
            teacher_topk_values.shape[:2] != student_logits.shape[:2]:
        raise ConfigError(f"teacher top-k values {tuple(teacher_topk_values.shape)} / indices "
                          f"{tuple(teacher_topk_indices.shape)} do not match student logits "
                          f"{tuple(student_logits.shape)}")
    log_s = F.log_softmax(_counted(student_logits, mask) / temperature, dim=-1)  # [N, V]
    keep = mask.bool()
    idx = teacher_topk_indices[keep].long()  # [N, k]
    if idx.numel() and int(idx.max()) >= log_s.shape[-1]:
        raise ConfigError(f"teacher top-k index {int(idx.max())} is outside the student vocabulary "
                          f"({log_s.shape[-1]}); the cache was made with another tokenizer")
    log_q = F.log_softmax(teacher_topk_values[keep].float() / temperature, dim=-1)  # [N, k]
    per_token = _kl(log_q, log_s.gather(-1, idx))  # [N]
    return _mean(per_token) * temperature ** 2


def causal_ce(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: logits[:, t] against input_ids[:, t + 1], mean over counted positions.

    ``mask`` [B, T] is aligned with the logits (see :func:`next_token_mask`); its last column is ignored
    (no target inside the window). Equals Hugging Face's ``labels=input_ids`` loss when every token counts.
    """
    if input_ids.shape != mask.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and mask {tuple(mask.shape)} differ")
    rows = _counted(logits[:, :-1], mask[:, :-1])  # [N, V]
    targets = input_ids[:, 1:][mask[:, :-1].bool()]  # [N]
    return F.cross_entropy(rows, targets, reduction="sum") / max(1, targets.numel())


def topk_cache(teacher_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's k largest logits per position: (values [B, T, k] fp16, indices [B, T, k] int32).

    Raw logits are kept (not probabilities) so any temperature can be applied later. One token costs
    ``topk_bytes_per_token(k)`` = 6k bytes (k = 64: 384 B; the full fp32 row of a 49,152 vocabulary is 196,608 B).
    fp16 holds logits to about 3 significant digits, plenty for a softmax target.
    """
    vocab = teacher_logits.shape[-1]
    if not 1 <= k <= vocab:
        raise ConfigError(f"top_k: {k} is not allowed; use 1..{vocab} (the vocabulary size)")
    values, indices = teacher_logits.detach().float().topk(k, dim=-1)  # sorted, largest first
    return values.half(), indices.int()


def topk_bytes_per_token(k: int) -> int:
    """Bytes one cached position takes in :func:`topk_cache`'s format (fp16 value + int32 index per entry)."""
    return TOPK_BYTES_PER_ENTRY * k


def _logits(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.logits


def lm_kd_loss(kind: LossKind, alpha: float, temperature: float = 1.0, beta: float = 0.5
               ) -> Callable[[Any, Any, dict[str, torch.Tensor]], torch.Tensor]:
    """A loss ``(student_out, teacher_out_or_topk, batch) -> scalar``: alpha * KD + (1 - alpha) * CE.

    alpha = 1 is pure distillation, alpha = 0 pure next-token cross-entropy (the teacher is then unused).
    ``student_out`` / ``teacher_out_or_topk``: a model output with ``.logits`` or a logits tensor [B, T, V];
    for ``kind="topk_kl"`` the teacher is a (values, indices) pair from :func:`topk_cache`.
    ``batch``: ``input_ids`` [B, T] and optionally ``attention_mask`` [B, T] (all ones when absent). KD and CE
    count the same positions, those of :func:`next_token_mask` (the last position of each window is skipped).
    ``beta`` is used only by ``kind="jsd"``.
    """
    if kind not in LOSS_KINDS:
        raise ConfigError(f"loss kind: {kind!r} is not allowed; use one of {', '.join(LOSS_KINDS)}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha: {alpha} is not allowed; use a number in [0, 1] (1 = pure distillation)")
    _check_temperature(temperature)
    if not 0.0 <= beta <= 1.0:
        raise ConfigError(f"beta: {beta} is not allowed; use a number in [0, 1]")

    def loss(student_out: Any, teacher_out_or_topk: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        s = _logits(student_out)
        ids = batch["input_ids"]
        am = batch.get("attention_mask")
        mask = next_token_mask(torch.ones_like(ids) if am is None else am)  # [B, T]
        total = s.new_zeros((), dtype=torch.float32)
        if alpha < 1.0:
            total = total + (1.0 - alpha) * causal_ce(s, ids, mask)
        if alpha > 0.0:
            if kind == "topk_kl":
                if not isinstance(teacher_out_or_topk, (tuple, list)):
                    raise TypeError("topk_kl needs the teacher as a (values, indices) pair from topk_cache")
                kd = topk_kl(s, teacher_out_or_topk[0], teacher_out_or_topk[1], mask, temperature)
            else:
                if isinstance(teacher_out_or_topk, (tuple, list)):
                    raise TypeError(f"{kind} needs full teacher logits; a top-k cache works only with topk_kl")
                t = _logits(teacher_out_or_topk)
                kd = generalised_jsd(s, t, mask, temperature, {"forward_kl": 0.0, "reverse_kl": 1.0, "jsd": beta}[kind])
            total = total + alpha * kd
        return total

    return loss
