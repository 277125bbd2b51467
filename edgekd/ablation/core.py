"""Train the pruned student without distillation, or without one distillation loss term.

Every variant runs through the distilled student's own loop (edgekd.distill.core.distill) with the
distill stage's config, changed in its loss weights only: same epochs, batch size, learning rate,
warm-up, early stopping on validation, seed and starting weights (the pruned model). With every
weight at 0 (and no teacher-labelled extra text) the loss is (1 - 0) * CE(z_s, y): hard labels only.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.ablation.config import HARD_LABELS, NO_EXTRA_DATA, AblationConfig, loss_terms, variant_name
from edgekd.data.split import Splits
from edgekd.distill.config import DistillConfig
from edgekd.distill.core import check_same_tokenizer, distill
from edgekd.errors import ConfigError
from edgekd.models import load_classifier, load_tokenizer
from edgekd.models.io import torch_device
from edgekd.train import FitResult

log = logging.getLogger(__name__)
# DistillConfig fields, besides the loss weights, that feed the student targets made by the teacher
# (extra_data: teacher-labelled extra text); the hard-label student resets them to their defaults (off).
TEACHER_TARGET_FIELDS = ("extra_data",)


def distill_stage_manifest(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest of the distill stage that made this run's student (the last one before this stage)."""
    manifest = next((h for h in reversed(history)
                     if h.get("kind") == "distill" and "student" in h.get("outputs", {})), None)
    if manifest is None:
        raise ConfigError("ablation: no distill stage made a student before it; the ablation trains with the "
                          "distill stage's budget, so put a distill stage before it")
    return manifest


def loss_weights(cfg: DistillConfig) -> dict[str, float]:
    return {term: getattr(cfg, term) for term in loss_terms()}


def variant_configs(distill_cfg: DistillConfig, cfg: AblationConfig) -> dict[str, DistillConfig]:
    """{variant name: the distill config it trains with}: the distill stage's, loss weights changed only."""
    terms = loss_terms()
    base = distill_cfg.model_dump()
    out: dict[str, DistillConfig] = {}
    if cfg.hard_labels:
        off = {t: 0.0 for t in terms} | {f: DistillConfig.model_fields[f].get_default(call_default_factory=True)
                                          for f in TEACHER_TARGET_FIELDS if f in DistillConfig.model_fields}
        out[HARD_LABELS] = DistillConfig.model_validate({**base, **off})
    for term in cfg.drop_terms:
        if term not in terms:  # the config was validated against DistillConfig as it was then
            raise ConfigError(f"ablation.drop_terms: unknown loss term {term!r}; allowed: {', '.join(terms)}")
        if getattr(distill_cfg, term) == 0:
            on = [t for t in terms if getattr(distill_cfg, t) != 0]
            raise ConfigError(f"ablation.drop_terms: {term!r} is already 0 in the distill stage, so that variant "
                              f"would be the distilled student again; terms switched on there: {', '.join(on)}")
        # Extra text is learned from the teacher's soft targets only: without the soft-target term it goes too.
        targets_off = {f: DistillConfig.model_fields[f].get_default(call_default_factory=True)
                       for f in TEACHER_TARGET_FIELDS} if term == "alpha" else {}
        out[variant_name(term)] = DistillConfig.model_validate({**base, term: 0.0, **targets_off})
    if cfg.extra_data:
        if not distill_cfg.extra_data.enabled:
            raise ConfigError("ablation.extra_data: the distill stage uses no teacher-labelled extra text "
                              "(distill.extra_data), so there is nothing to leave out")
        out[NO_EXTRA_DATA] = DistillConfig.model_validate(
            {**base, "extra_data": DistillConfig.model_fields["extra_data"].get_default(call_default_factory=True)})
    seen: dict[str, str] = {}
    for name, variant in out.items():
        same = variant.model_dump_json()
        if same in seen:  # e.g. dropping alpha when beta and gamma are 0 is the hard-label student
            raise ConfigError(f"ablation.drop_terms: {name!r} trains the same loss as {seen[same]!r} "
                              f"({loss_weights(variant)}); leave it out")
        seen[same] = name
    return out


def train_variant(student: nn.Module, teacher: nn.Module, tokenizer, splits: Splits, cfg: DistillConfig, seed: int,
                  max_length: int, device: torch.device, teacher_logits: np.ndarray | None = None
                  ) -> tuple[FitResult, np.ndarray | None]:
    """Train ``student`` in place with ``cfg``; returns the fit and the teacher's logits over the training
    split [N_train, C] (None when the soft-target term was off).

    With alpha = 0 the soft-target term is multiplied by 0, so the cached teacher logits reach neither
    the loss nor its gradient: zeros [N_train, C] stand in for them and the teacher's forward over the
    training split is skipped. The teacher runs per batch only for the feature terms that are on.
    """
    if cfg.alpha == 0:
        teacher_logits = np.zeros((len(splits.train), len(splits.label_names)), dtype=np.float32)
    result, logits = distill(student, teacher, tokenizer, splits, cfg, seed, max_length, device, teacher_logits)
    # Only the training split's rows are returned for reuse: rows of teacher-labelled extra text (when
    # extra_data is on) follow them and depend on the seed that drew that text.
    return result, (logits[: len(splits.train)] if cfg.alpha > 0 else None)


@dataclass
class TrainedVariant:
    name: str
    config: DistillConfig
    model: nn.Module  # on CPU, best validation weights restored
    tokenizer: Any
    result: FitResult
    teacher_logits: np.ndarray | None  # [N_train, C] of the training split, when the soft-target term was on


def train_variants(teacher_dir: str, pruned_dir: str, splits: Splits, variants: dict[str, DistillConfig], seed: int,
                   max_length: int, teacher_logits: np.ndarray | None = None) -> Iterator[TrainedVariant]:
    """Train each variant from a fresh load of the pruned student, one at a time (save each before the next).

    The teacher's logits over the training split are computed at most once and shared by the variants
    that use them; pass ``teacher_logits`` to reuse logits computed before.
    """
    for name, cfg in variants.items():
        attn = "eager" if cfg.gamma > 0 else "sdpa"  # attention maps come from the eager implementation only
        teacher = load_classifier(teacher_dir, attn_implementation=attn)
        student = load_classifier(pruned_dir, attn_implementation=attn)
        tokenizer = load_tokenizer(pruned_dir)
        check_same_tokenizer(load_tokenizer(teacher_dir), tokenizer)
        log.info("%s: training the pruned student with loss weights %s, %d epoch(s), seed %d", name,
                 loss_weights(cfg), cfg.epochs, seed)
        result, used = train_variant(student, teacher, tokenizer, splits, cfg, seed, max_length,
                                     torch_device(cfg.device), teacher_logits)
        teacher_logits = used if used is not None else teacher_logits
        del teacher
        yield TrainedVariant(name, cfg, student, tokenizer, result, used)
