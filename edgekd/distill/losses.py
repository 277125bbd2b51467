"""Distillation losses as small modules: (student outputs, teacher outputs, labels / mask) -> scalar."""

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


class SoftTargetLoss(nn.Module):
    """alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) * CE(z_s, y).

    The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones when T
    changes (Hinton et al., 2015). Logits are [batch, classes]; labels [batch]. ``temperature`` in
    forward overrides the constructor's T (a scheduled T); the T^2 factor follows it.
    """

    def __init__(self, temperature: float, alpha: float):
        super().__init__()
        self.temperature, self.alpha = temperature, alpha

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                temperature: float | None = None) -> torch.Tensor:
        t = self.temperature if temperature is None else temperature
        soft = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                        reduction="batchmean", log_target=True) * t * t
        hard = F.cross_entropy(student_logits, labels)
        return self.alpha * soft + (1.0 - self.alpha) * hard


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` [B, S, ...] over the positions where ``mask`` [B, S] is 1."""
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(-1)
    mask = mask.to(values.dtype)
    return (values * mask).sum() / (mask.sum() * values[0, 0].numel()).clamp_min(1.0)


class HiddenStateLoss(nn.Module):
    """MSE between mapped layer outputs, through a learned projection where widths differ.

    ``layer_map`` is {student layer: teacher layer} (0-based layer outputs). hidden_states tuples
    from transformers hold the embedding output first, so layer i is at index i + 1; each is [B, S, H].
    """

    def __init__(self, layer_map: dict[int, int], student_width: int, teacher_width: int):
        super().__init__()
        self.layer_map = dict(sorted(layer_map.items()))
        self.projections = nn.ModuleDict({
            str(s): (nn.Linear(student_width, teacher_width) if student_width != teacher_width else nn.Identity())
            for s in self.layer_map
        })

    def forward(self, student_hidden, teacher_hidden, mask: torch.Tensor) -> torch.Tensor:
        losses = []
        for s, t in self.layer_map.items():
            projected = self.projections[str(s)](student_hidden[s + 1])
            losses.append(masked_mean((projected - teacher_hidden[t + 1]).pow(2), mask))
        return torch.stack(losses).mean()


class AttentionMapLoss(nn.Module):
    """KL(teacher || student) between head-averaged attention maps of mapped layers.

    Attention tensors are [B, heads, S, S]; pruned students have fewer heads than their teacher, so
    both are averaged over heads to [B, S, S] before comparing each query row's distribution.
    """

    def __init__(self, layer_map: dict[int, int]):
        super().__init__()
        self.layer_map = dict(sorted(layer_map.items()))

    def forward(self, student_attn, teacher_attn, mask: torch.Tensor) -> torch.Tensor:
        losses = []
        for s, t in self.layer_map.items():
            p_t = teacher_attn[t].mean(dim=1).clamp_min(1e-9)
            p_s = student_attn[s].mean(dim=1).clamp_min(1e-9)
            kl_rows = (p_t * (p_t.log() - p_s.log())).sum(-1)  # [B, S]: one distribution per query position
            losses.append(masked_mean(kl_rows, mask))
        return torch.stack(losses).mean()


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE between student and teacher [CLS] (first-token) final hidden states.

    The student's vector [B, H_s] goes through a learned Linear to the teacher width H_t (identity-
    initialised when the widths are equal: a pruned student starts in its teacher's space); both are
    L2-normalised and their cosine similarities / temperature form [B, B] logits whose diagonal holds
    the matching pairs; the other B - 1 examples of the batch are the negatives (CLIP-style, both
    directions averaged). The projection trains with the student: pass this module to fit().
    """

    def __init__(self, student_width: int, teacher_width: int, temperature: float):
        super().__init__()
        self.temperature = temperature
        self.projection = nn.Linear(student_width, teacher_width)
        if student_width == teacher_width:
            with torch.no_grad():
                self.projection.weight.copy_(torch.eye(teacher_width))
                self.projection.bias.zero_()

    def forward(self, student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
        # float32 even inside fit()'s bf16 autocast: similarities / 0.1 in bf16 are off by ~0.05
        with torch.autocast(student_cls.device.type, enabled=False):
            z_s = F.normalize(self.projection(student_cls.float()), dim=-1)  # [B, H_t]
            z_t = F.normalize(teacher_cls.float(), dim=-1)  # [B, H_t]
            logits = z_s @ z_t.T / self.temperature  # [B, B]: row i = student i against every teacher vector
            targets = torch.arange(len(logits), device=logits.device)
            return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


@dataclass(frozen=True)
class TemperatureSchedule:
    """Soft-target temperature at an optimisation step: ``start`` at step 0, ``end`` at the last step.

    linear: straight line; cosine: half a cosine wave (flat at both ends); constant: ``start`` always.
    Steps past ``total_steps - 1`` stay at ``end``.
    """

    start: float
    end: float
    kind: Literal["constant", "linear", "cosine"]
    total_steps: int

    def __call__(self, step: int) -> float:
        if self.kind == "constant":
            return self.start
        progress = min(1.0, step / max(1, self.total_steps - 1))
        if self.kind == "linear":
            return self.start + (self.end - self.start) * progress
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * progress))
