"""Distil a fine-tuned teacher into a (pruned) student.

The teacher stays in eval mode under no_grad. Its logits over the training split are computed once
and cached ([N, classes]); hidden states and attention maps, when their terms are on, come from a
teacher forward on the same batch.
"""

import logging

import numpy as np
import torch
from torch import nn

from edgekd.data.split import Splits
from edgekd.data.tokenize import encode
from edgekd.distill.config import DistillConfig
from edgekd.distill.losses import AttentionMapLoss, HiddenStateLoss, SoftTargetLoss
from edgekd.errors import ConfigError
from edgekd.models.arch import arch_of, encoder_layers
from edgekd.teacher.core import settings_from
from edgekd.train import FitResult, fit, predict_logits

log = logging.getLogger(__name__)


def default_layer_map(student: nn.Module, teacher: nn.Module) -> dict[int, int]:
    """Each student layer maps to the teacher layer it was pruned from, else to evenly spaced ones."""
    n_s, n_t = len(encoder_layers(student)), len(encoder_layers(teacher))
    source = (getattr(student.config, "edgekd_layout", None) or {}).get("source_layers") or []
    if len(source) == n_s:
        return {i: t for i, t in enumerate(source)}
    return {i: round((i + 1) * n_t / n_s) - 1 for i in range(n_s)}


def check_layer_map(layer_map: dict[int, int], student: nn.Module, teacher: nn.Module) -> None:
    n_s, n_t = len(encoder_layers(student)), len(encoder_layers(teacher))
    for s, t in layer_map.items():
        if not (0 <= s < n_s and 0 <= t < n_t):
            raise ConfigError(f"distill.layer_map: {s}: {t} out of range (student has {n_s} layers, teacher {n_t})")


def distill(student: nn.Module, teacher: nn.Module, tokenizer, splits: Splits, cfg: DistillConfig, seed: int,
            max_length: int, device: torch.device, teacher_logits: np.ndarray | None = None
            ) -> tuple[FitResult, np.ndarray]:
    """Train ``student`` in place; returns the fit result and the cached teacher logits [N_train, C]."""
    torch.manual_seed(seed)
    train_ids = encode(tokenizer, splits.train.texts, max_length)
    val_ids = encode(tokenizer, splits.validation.texts, max_length)
    pad = tokenizer.pad_token_id
    teacher.to(device).eval()  # every teacher forward below runs under no_grad / inference_mode
    if teacher_logits is None:
        log.info("caching teacher logits over %d training examples", len(train_ids))
        teacher_logits = predict_logits(teacher, train_ids, pad, device, bf16=cfg.bf16)
    cached = torch.from_numpy(teacher_logits).to(device)

    soft = SoftTargetLoss(cfg.temperature, cfg.alpha)
    layer_map = cfg.layer_map or default_layer_map(student, teacher)
    check_layer_map(layer_map, student, teacher)
    width = lambda m: getattr(m.config, arch_of(m).cfg_hidden)  # noqa: E731
    hidden_loss = HiddenStateLoss(layer_map, width(student), width(teacher)) if cfg.beta > 0 else None
    attn_loss = AttentionMapLoss(layer_map) if cfg.gamma > 0 else None
    need_teacher = hidden_loss is not None or attn_loss is not None
    if need_teacher:
        log.info("hidden/attention transfer on layer map %s (student: teacher)", layer_map)

    def loss_fn(model, batch, idx, labels):
        out = model(**batch, output_hidden_states=hidden_loss is not None, output_attentions=attn_loss is not None)
        loss = soft(out.logits.float(), cached[idx], labels)
        if need_teacher:
            with torch.no_grad():
                t_out = teacher(**batch, output_hidden_states=hidden_loss is not None,
                                output_attentions=attn_loss is not None)
            mask = batch["attention_mask"]
            if hidden_loss is not None:
                loss = loss + cfg.beta * hidden_loss(out.hidden_states, t_out.hidden_states, mask)
            if attn_loss is not None:
                loss = loss + cfg.gamma * attn_loss(out.attentions, t_out.attentions, mask)
        return loss

    extra = [hidden_loss] if hidden_loss is not None else []
    result = fit(student, loss_fn, train_ids, splits.train.labels, val_ids, splits.validation.labels, pad,
                 settings_from(cfg, seed, device), extra_modules=extra, desc="distill")
    teacher.cpu()
    return result, teacher_logits
