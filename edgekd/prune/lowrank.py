"""Low-rank factorisation of encoder Linears by truncated SVD.

A Linear y = W x + b with W [out, in] becomes y = U_r S_r (V_r^T x) + b: a Linear in -> r without bias
(weight V_r^T [r, in]) followed by a Linear r -> out with the original bias (weight U_r S_r [out, r]).
Only done where it saves parameters, r * (in + out) < in * out. The ranks are written into the config
(``edgekd_low_rank``), and :func:`apply_low_rank_layout` rebuilds the same modules before weights are loaded.
"""

import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from edgekd.errors import ConfigError
from edgekd.models.arch import encoder_layers, layer_modules
from edgekd.models.io import LOW_RANK_KEY

log = logging.getLogger(__name__)
GROUPS = ("ffn_in", "ffn_out", "out")  # names from models.arch.layer_modules: FFN up/down, attention output


class LowRankLinear(nn.Module):
    """x [..., in] -> up(down(x)) [..., out]; in_features/out_features read like nn.Linear's."""

    def __init__(self, in_features: int, rank: int, out_features: int, bias: bool):
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)  # V_r^T: weight [rank, in]
        self.up = nn.Linear(rank, out_features, bias=bias)  # U_r S_r: weight [out, rank]

    @property
    def in_features(self) -> int:
        return self.down.in_features

    @property
    def out_features(self) -> int:
        return self.up.out_features

    @property
    def rank(self) -> int:
        return self.down.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


@dataclass
class LowRankReport:
    parameters_before: int
    parameters_after: int
    # per group, one entry per layer: the rank, or None where factorising would not save parameters
    ranks: dict[str, list[int | None]] = field(default_factory=dict)
    # per group and layer: ||W - W_r||_F / ||W||_F (None where not factorised)
    relative_error: dict[str, list[float | None]] = field(default_factory=dict)


def choose_rank(singular_values: torch.Tensor, rank: int | None, energy: float | None, multiple: int) -> int:
    """``rank``, or the smallest r whose singular values keep ``energy`` of sum(S^2); rounded up to a multiple
    of ``multiple`` and capped at the full rank."""
    full = singular_values.numel()
    if rank is None:
        share = torch.cumsum(singular_values.double() ** 2, 0) / (singular_values.double() ** 2).sum()
        rank = int(torch.searchsorted(share, torch.tensor([energy], dtype=share.dtype) - 1e-12).item()) + 1
    return min(full, multiple * math.ceil(rank / multiple))


def _replace(layer: nn.Module, target: nn.Module, new: nn.Module) -> None:
    for name, child in layer.named_modules():
        if child is target:
            parent, _, leaf = name.rpartition(".")
            setattr(layer.get_submodule(parent) if parent else layer, leaf, new)
            return
    raise ValueError("module not found in its layer")


@torch.no_grad()
def factorize_linears(model: nn.Module, rank: int | None, energy: float | None, include: list[str],
                      multiple: int = 8) -> LowRankReport:
    """Replace the ``include`` Linears of every encoder layer by two thinner ones, in place.

    Exactly one of ``rank`` (fixed) and ``energy`` (share of squared singular values kept, in (0, 1]).
    """
    if (rank is None) == (energy is None):
        raise ConfigError("low_rank: set exactly one of rank and energy")
    bad = [g for g in include if g not in GROUPS]
    if bad or not include:
        raise ConfigError(f"low_rank.include: {bad or include} not allowed; allowed: {', '.join(GROUPS)}")
    before = sum(p.numel() for p in model.parameters())
    report = LowRankReport(before, before, {g: [] for g in include}, {g: [] for g in include})
    for layer in encoder_layers(model):
        parts = layer_modules(model, layer)
        for group in include:
            linear = parts[group]
            if not isinstance(linear, nn.Linear):
                raise ConfigError(f"low_rank.include: {group} is already factorised")
            weight = linear.weight.float()  # [out, in]
            u, s, vh = torch.linalg.svd(weight, full_matrices=False)  # u [out, k], s [k], vh [k, in]
            r = choose_rank(s, rank, energy, multiple)
            if r * (linear.in_features + linear.out_features) >= linear.in_features * linear.out_features:
                report.ranks[group].append(None)
                report.relative_error[group].append(None)
                continue
            new = LowRankLinear(linear.in_features, r, linear.out_features, linear.bias is not None)
            new.down.weight.copy_(vh[:r])
            new.up.weight.copy_(u[:, :r] * s[:r])
            if linear.bias is not None:
                new.up.bias.copy_(linear.bias)
            new.to(linear.weight.dtype)
            error = torch.linalg.norm(new.up.weight @ new.down.weight - weight) / torch.linalg.norm(weight)
            report.ranks[group].append(r)
            report.relative_error[group].append(round(float(error), 6))
            _replace(layer, linear, new)
    report.parameters_after = sum(p.numel() for p in model.parameters())
    setattr(model.config, LOW_RANK_KEY, {"ranks": report.ranks})
    log.info("low-rank factorisation: %d -> %d parameters, ranks %s", before, report.parameters_after, report.ranks)
    return report


def apply_low_rank_layout(model: nn.Module, low_rank: dict) -> None:
    """Swap in empty LowRankLinear modules of the recorded ranks (weights are loaded afterwards)."""
    layers = encoder_layers(model)
    for group, ranks in low_rank["ranks"].items():
        if len(ranks) != len(layers):
            raise ValueError(f"{LOW_RANK_KEY}: {len(ranks)} ranks for {group}, but the model has {len(layers)} layers")
        for layer, r in zip(layers, ranks):
            if r is not None:
                linear = layer_modules(model, layer)[group]
                _replace(layer, linear, LowRankLinear(linear.in_features, r, linear.out_features,
                                                      linear.bias is not None))
