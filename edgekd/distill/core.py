"""Distil a fine-tuned teacher into a (pruned) student.

The teacher stays in eval mode under no_grad. Its logits over the training split are computed once
and cached ([N, classes]); hidden states, attention maps and Q/K/V, when a term needs them, come from
one teacher forward on the same batch. The loss is written out in ``loss_fn``; DistillConfig's
docstring states it.
"""

import itertools
import logging
import math

import numpy as np
import torch
from torch import nn

from edgekd import distributed
from edgekd.data.split import Splits
from edgekd.data.tokenize import encode
from edgekd.distill.augment import NO_LABEL, ExtraExamples, build_extra_examples, mixed_soft_loss
from edgekd.distill.config import DistillConfig
from edgekd.distill.losses import (AttentionMapLoss, ContrastiveLoss, HiddenStateLoss, SoftTargetLoss,
                                   TemperatureSchedule)
from edgekd.distill.relations import RelationLoss, check_relation_heads, record_qkv
from edgekd.errors import ConfigError
from edgekd.models.arch import arch_of, encoder_layers
from edgekd.teacher.core import settings_from
from edgekd.train import FitResult, TrainSettings, fit, predict_logits

log = logging.getLogger(__name__)


def default_layer_map(student: nn.Module, teacher: nn.Module) -> dict[int, int]:
    """Each student layer maps to the teacher layer it was pruned from, else to evenly spaced ones."""
    n_s, n_t = len(encoder_layers(student)), len(encoder_layers(teacher))
    source = (getattr(student.config, "edgekd_layout", None) or {}).get("source_layers") or []
    if len(source) == n_s:
        return {i: t for i, t in enumerate(source)}
    return {i: round((i + 1) * n_t / n_s) - 1 for i in range(n_s)}


def last_layer_map(student: nn.Module, teacher: nn.Module) -> dict[int, int]:
    """{last student layer: last teacher layer}, MiniLM's default for relation transfer."""
    return {len(encoder_layers(student)) - 1: len(encoder_layers(teacher)) - 1}


def check_same_tokenizer(teacher_tokenizer, student_tokenizer) -> None:
    """The teacher reads the student's token ids (cached logits, per-batch forwards, augmentation):
    both must number tokens alike, so a vocabulary trimmed before distillation is refused."""
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise ConfigError(f"distill: the teacher ({len(teacher_tokenizer)} tokens) and the student "
                          f"({len(student_tokenizer)} tokens) number their tokens differently; trim the vocabulary "
                          "after distillation (a vocab stage on the distilled student), not before")


def check_layer_map(layer_map: dict[int, int], student: nn.Module, teacher: nn.Module,
                    field: str = "layer_map") -> None:
    n_s, n_t = len(encoder_layers(student)), len(encoder_layers(teacher))
    for s, t in layer_map.items():
        if not (0 <= s < n_s and 0 <= t < n_t):
            raise ConfigError(f"distill.{field}: {s}: {t} out of range (student has {n_s} layers, teacher {n_t})")


def planned_steps(n_examples: int, settings: TrainSettings) -> int:
    """The optimisation steps fit() runs unless it stops early (same budget as fit computes)."""
    total = math.ceil(n_examples / settings.batch_size) * settings.epochs
    return total if settings.max_steps is None else min(total, settings.max_steps)


def distill(student: nn.Module, teacher: nn.Module, tokenizer, splits: Splits, cfg: DistillConfig, seed: int,
            max_length: int, device: torch.device, teacher_logits: np.ndarray | None = None,
            extra_examples: ExtraExamples | None = None) -> tuple[FitResult, np.ndarray]:
    """Train ``student`` in place; returns the fit result and the cached teacher logits [N_train + N_extra, C].

    ``extra_examples``: teacher-labelled examples beyond the training split (built from ``cfg.extra_data``
    when None). ``teacher_logits`` may hold the training split's rows only; the extra rows are then added.
    """
    torch.manual_seed(seed)
    train_ids = encode(tokenizer, splits.train.texts, max_length)
    val_ids = encode(tokenizer, splits.validation.texts, max_length)
    pad = tokenizer.pad_token_id
    if extra_examples is None and cfg.extra_data.enabled:
        extra_examples = build_extra_examples(tokenizer, teacher, splits.unlabelled, train_ids, cfg.extra_data, seed,
                                              max_length)
    extra_examples = extra_examples or ExtraExamples(ids=[], kinds=[])
    # Mixed batches: extra examples are shuffled in with the labelled ones and marked NO_LABEL, so each
    # step sees both in proportion and fit()'s one loop, schedule and length grouping serve both.
    n_train = len(train_ids)
    train_ids = train_ids + extra_examples.ids
    train_labels = list(splits.train.labels) + [NO_LABEL] * len(extra_examples)
    teacher.to(device).eval()  # every teacher forward below runs under no_grad / inference_mode
    known = 0 if teacher_logits is None else len(teacher_logits)
    if teacher_logits is not None and known not in (n_train, len(train_ids)):
        raise ValueError(f"teacher_logits has {known} rows; expected {n_train} (training split) or {len(train_ids)} "
                         f"(with {len(extra_examples)} extra examples)")
    if known < len(train_ids):
        log.info("caching teacher logits over %d examples (%d training, %s extra)", len(train_ids) - known,
                 max(0, n_train - known), extra_examples.counts())
        new = predict_logits(teacher, train_ids[known:], pad, device, bf16=cfg.bf16)
        teacher_logits = new if teacher_logits is None else np.concatenate([teacher_logits, new])
    cached = torch.from_numpy(teacher_logits).to(device)

    soft = SoftTargetLoss(cfg.temperature, cfg.alpha)
    layer_map = cfg.layer_map or default_layer_map(student, teacher)
    check_layer_map(layer_map, student, teacher)
    width = lambda m: getattr(m.config, arch_of(m).cfg_hidden)  # noqa: E731
    hidden_loss = HiddenStateLoss(layer_map, width(student), width(teacher)) if cfg.beta > 0 else None
    attn_loss = AttentionMapLoss(layer_map) if cfg.gamma > 0 else None
    if hidden_loss is not None or attn_loss is not None:
        log.info("hidden/attention transfer on layer map %s (student: teacher)", layer_map)
    relation_loss = None
    if cfg.relation_weight > 0:
        relation_map = cfg.relation_layers or last_layer_map(student, teacher)
        check_layer_map(relation_map, student, teacher, field="relation_layers")
        check_relation_heads(cfg.relation_heads, relation_map, student, teacher)
        relation_loss = RelationLoss(relation_map, cfg.relations, cfg.relation_heads)
        log.info("%s relation transfer on layers %s (student: teacher), %d relation heads",
                 "/".join(cfg.relations), relation_map, cfg.relation_heads)
    if cfg.contrastive_weight > 0 and distributed.info_from_env().enabled:
        # Its negatives are the other examples of the batch: under DDP each process would see only its share.
        raise ConfigError("distill.contrastive_weight: the contrastive term is not supported under torchrun yet (its "
                          "in-batch negatives would shrink to each process's share); set it to 0 or train on one "
                          "process")
    contrastive_loss = (ContrastiveLoss(width(student), width(teacher), cfg.contrastive_temperature)
                        if cfg.contrastive_weight > 0 else None)
    # What the student and teacher forwards must return; the teacher runs only when a term reads it.
    need_hidden = hidden_loss is not None or contrastive_loss is not None
    need_attn = attn_loss is not None
    need_teacher = need_hidden or need_attn or relation_loss is not None
    student_qkv_layers = list(relation_loss.layer_map) if relation_loss is not None else []
    teacher_qkv_layers = list(relation_loss.layer_map.values()) if relation_loss is not None else []
    steps_taken = itertools.count()  # fit() calls loss_fn exactly once per optimisation step

    def loss_fn(model, batch, idx, labels):
        with record_qkv(model, student_qkv_layers) as student_qkv:
            out = model(**batch, output_hidden_states=need_hidden, output_attentions=need_attn)
        loss = mixed_soft_loss(soft, out.logits.float(), cached[idx], labels, temperature_at(next(steps_taken)),
                               cfg.extra_data.weight)
        if not need_teacher:
            return loss
        with torch.no_grad(), record_qkv(teacher, teacher_qkv_layers) as teacher_qkv:
            t_out = teacher(**batch, output_hidden_states=need_hidden, output_attentions=need_attn)
        mask = batch["attention_mask"]  # [B, S], 0 on padding
        if hidden_loss is not None:
            loss = loss + cfg.beta * hidden_loss(out.hidden_states, t_out.hidden_states, mask)
        if attn_loss is not None:
            loss = loss + cfg.gamma * attn_loss(out.attentions, t_out.attentions, mask)
        if relation_loss is not None:
            loss = loss + cfg.relation_weight * relation_loss(student_qkv, teacher_qkv, mask)
        if contrastive_loss is not None:  # first-token final hidden states, [B, H]
            loss = loss + cfg.contrastive_weight * contrastive_loss(out.hidden_states[-1][:, 0],
                                                                    t_out.hidden_states[-1][:, 0])
        return loss

    settings = settings_from(cfg, seed, device)
    # Built here, after the training examples are final: the schedule spans the run's planned steps.
    temperature_at = TemperatureSchedule(cfg.temperature, cfg.final_temperature, cfg.temperature_schedule,
                                         planned_steps(len(train_ids), settings))  # extra examples included
    if cfg.temperature_schedule != "constant":
        log.info("soft-target temperature %s from %g to %g over %d steps", cfg.temperature_schedule,
                 cfg.temperature, cfg.final_temperature, temperature_at.total_steps)
    extra = [m for m in (hidden_loss, contrastive_loss) if m is not None]  # learned projections train too
    result = fit(student, loss_fn, train_ids, train_labels, val_ids, splits.validation.labels, pad,
                 settings, extra_modules=extra, desc="distill")
    teacher.cpu()
    return result, teacher_logits
