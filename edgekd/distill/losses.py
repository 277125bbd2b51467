"""Distillation losses as small modules: (student outputs, teacher outputs, labels / mask) -> scalar."""

import torch
import torch.nn.functional as F
from torch import nn


class SoftTargetLoss(nn.Module):
    """alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) * CE(z_s, y).

    The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones when T
    changes (Hinton et al., 2015). Logits are [batch, classes]; labels [batch].
    """

    def __init__(self, temperature: float, alpha: float):
        super().__init__()
        self.temperature, self.alpha = temperature, alpha

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        soft = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                        reduction="batchmean", log_target=True) * t * t
        hard = F.cross_entropy(student_logits, labels)
        return self.alpha * soft + (1.0 - self.alpha) * hard


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
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
            losses.append(_masked_mean((projected - teacher_hidden[t + 1]).pow(2), mask))
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
            losses.append(_masked_mean(kl_rows, mask))
        return torch.stack(losses).mean()
