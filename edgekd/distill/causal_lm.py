"""Distil a causal LM teacher into a pruned student: token-level KD on the training windows, with
optional teacher-written windows (sequence-level KD) and top-k teacher logits cached once.

Every window is full (model.max_length tokens, no padding), so a batch is [B, T] input ids and the
logits are [B, T, V]; the KD and CE terms count the same next-token positions (edgekd.distill.lm_losses).
"""

import logging
import random
from dataclasses import dataclass

import torch
from torch import nn

from edgekd.distill.config import DistillConfig, GeneratedTextConfig
from edgekd.distill.lm_losses import lm_kd_loss, topk_bytes_per_token, topk_cache
from edgekd.teacher.core import settings_from
from edgekd.train import FitResult, fit

log = logging.getLogger(__name__)
TOPK_BATCH = 8  # windows per teacher forward while caching top-k logits ([8, T, V] floats at a time)


@dataclass
class LMDistillResult:
    fit: FitResult
    generated_windows: int
    generate_seconds: float
    topk_bytes: int


@torch.inference_mode()
def teacher_written_windows(teacher: nn.Module, windows: list[list[int]], cfg: GeneratedTextConfig, block: int,
                            seed: int, eos_id: int) -> list[list[int]]:
    """``cfg.sequences`` windows: the first ``prompt_tokens`` of a (seeded) training window, continued by
    the teacher to exactly ``block`` tokens (EOS is suppressed until then, so every window stays full)."""
    if cfg.sequences == 0:
        return []
    if cfg.prompt_tokens >= block:  # (the pipeline refuses this before it runs; the plain function too)
        from edgekd.errors import ConfigError

        raise ConfigError(f"distill.lm.generated.prompt_tokens: {cfg.prompt_tokens} leaves no room to write in a "
                          f"window of model.max_length {block} tokens; use fewer than {block}")
    rng = random.Random(seed)
    picks = [rng.randrange(len(windows)) for _ in range(cfg.sequences)]
    new = block - cfg.prompt_tokens
    out: list[list[int]] = []
    teacher.eval()
    torch.manual_seed(seed)
    for start in range(0, len(picks), TOPK_BATCH):
        prompts = torch.tensor([windows[i][: cfg.prompt_tokens] for i in picks[start : start + TOPK_BATCH]],
                               device=next(teacher.parameters()).device)
        sampling = {"do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p} if cfg.do_sample else \
            {"do_sample": False}
        ids = teacher.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new,
                               min_new_tokens=new, pad_token_id=eos_id, **sampling)
        out += ids[:, :block].cpu().tolist()  # [b, prompt + new] = [b, block]
        log.info("distill: the teacher wrote %d / %d windows", len(out), len(picks))
    return out


@torch.inference_mode()
def cache_teacher_topk(teacher: nn.Module, windows: list[list[int]], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k teacher logits for every window, kept on the CPU: values [N, T, k] fp16, indices [N, T, k] int32."""
    teacher.eval()
    device = next(teacher.parameters()).device
    values, indices = [], []
    for start in range(0, len(windows), TOPK_BATCH):
        ids = torch.tensor(windows[start : start + TOPK_BATCH], device=device)
        v, i = topk_cache(teacher(input_ids=ids, use_cache=False).logits, k)
        values.append(v.cpu())
        indices.append(i.cpu())
    return torch.cat(values), torch.cat(indices)


def distill_causal_lm(student: nn.Module, teacher: nn.Module | None, train: list[list[int]], val: list[list[int]],
                      cfg: DistillConfig, seed: int, device: torch.device, eos_id: int,
                      evaluate, desc: str = "distill") -> LMDistillResult:
    """Train ``student`` in place; the epoch with the lowest validation perplexity is kept. ``teacher`` may be
    None for cross-entropy alone (alpha 0, no teacher-written text): the non-distilled student."""
    import time

    lm = cfg.lm_settings()
    block = len(train[0])
    if teacher is None:
        if cfg.alpha > 0 or lm.generated.sequences:
            raise ValueError("distill_causal_lm: a teacher is needed for alpha > 0 or teacher-written text")
        teacher = nn.Identity()  # never called: the loss below skips the teacher at alpha 0
    teacher.to(device).eval()  # (on the GPU, if any, before it writes text or caches logits)
    start = time.perf_counter()
    written = teacher_written_windows(teacher, train, lm.generated, block, seed, eos_id)
    generate_seconds = time.perf_counter() - start
    windows = train + written
    # A top-k cache holds (values, indices) per token: the matching loss is KL over the teacher's top k.
    kind = "topk_kl" if lm.teacher_logits == "topk" else lm.loss
    kd = lm_kd_loss(kind, cfg.alpha, cfg.temperature, lm.jsd_beta)
    topk = None
    if cfg.alpha > 0 and lm.teacher_logits == "topk":
        topk = cache_teacher_topk(teacher, windows, lm.topk)
        log.info("distill: cached top-%d teacher logits for %d windows (%.0f MB)", lm.topk, len(windows),
                 topk[0].numel() / lm.topk * topk_bytes_per_token(lm.topk) / 1e6)

    def loss_fn(model, batch, idx, labels) -> torch.Tensor:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        if cfg.alpha == 0:  # cross-entropy only (the non-distilled student): the teacher is not run
            target = None
        elif topk is not None:
            target = (topk[0][idx].to(device), topk[1][idx].to(device))
        else:
            with torch.no_grad():
                target = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 use_cache=False).logits
        return kd(out, target, batch)

    torch.manual_seed(seed)
    settings = settings_from(cfg, seed, device)
    result = fit(student, loss_fn, windows, None, val, None, eos_id, settings, desc=desc, evaluate=evaluate,
                 selection=_perplexity())
    teacher.cpu()
    return LMDistillResult(result, len(written), round(generate_seconds, 1),
                           0 if topk is None else topk[0].numel() // lm.topk * topk_bytes_per_token(lm.topk))


def _perplexity():
    from edgekd.tasks.causal_lm import PERPLEXITY

    return PERPLEXITY
