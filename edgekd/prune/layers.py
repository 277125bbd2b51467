"""Which layers depth pruning keeps: evenly spaced, or the ones measured to matter most.

- ``even``: an evenly spaced subset that keeps the first and the last layer.
- ``block_influence`` (ShortGPT, Men et al. 2024): BI_i = 1 - mean cos(x_in, x_out) of layer i over
  the non-pad tokens of the calibration batches; a layer that barely turns its input is dropped first.
- ``skip_loss``: the damage of skipping layer i alone, KL(teacher || model without layer i) of the
  class distributions on the calibration batches; the cheapest layers to skip are dropped. Greedy: drop
  the cheapest layer, re-measure the remaining ones on the shortened model, repeat.
"""

import copy
import logging

import torch
from torch import nn
from torch.nn import functional as F

from edgekd.errors import ConfigError
from edgekd.models.arch import arch_of, base_model, encoder_layers
from edgekd.prune.config import PruneConfig

log = logging.getLogger(__name__)
Calibration = list[tuple[dict, torch.Tensor]]


def layers_kept_count(num_layers: int, layer_ratio: float) -> int:
    return max(1, round(num_layers * (1.0 - layer_ratio)))


def even_layers(num_layers: int, keep: int) -> list[int]:
    if keep == 1:
        return [num_layers - 1]
    return sorted({round(i * (num_layers - 1) / (keep - 1)) for i in range(keep)})


def layers_to_keep(num_layers: int, cfg: PruneConfig) -> list[int]:
    """Explicit ``keep_layers``, or an evenly spaced subset (the scored selections use :func:`select_layers`)."""
    if cfg.keep_layers is not None:
        bad = [i for i in cfg.keep_layers if i >= num_layers]
        if bad:
            raise ConfigError(f"prune.keep_layers: {bad} out of range; the model has layers 0..{num_layers - 1}")
        return sorted(cfg.keep_layers)
    return even_layers(num_layers, layers_kept_count(num_layers, cfg.layer_ratio))


def drop_layers(model: nn.Module, keep: list[int]) -> None:
    """Keep only the layers ``keep`` (in place) and renumber them for the cache bookkeeping."""
    layers = encoder_layers(model)
    kept = nn.ModuleList([layers[i] for i in keep])
    for new_index, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    parent = base_model(model)
    for part in arch_of(model).layers_path[:-1]:
        parent = getattr(parent, part)
    setattr(parent, arch_of(model).layers_path[-1], kept)
    setattr(model.config, arch_of(model).cfg_layers, len(keep))


@torch.no_grad()
def block_influence(model: nn.Module, calibration: Calibration) -> list[float]:
    """BI of every layer: 1 - mean over non-pad tokens of cos(layer input, layer output)."""
    num_layers = len(encoder_layers(model))
    total, tokens = torch.zeros(num_layers), 0.0
    for batch, _ in calibration:
        states = model(**batch, output_hidden_states=True).hidden_states  # L + 1 tensors [B, S, D]
        mask = batch["attention_mask"].bool()  # [B, S]
        for i in range(num_layers):
            cos = F.cosine_similarity(states[i], states[i + 1], dim=-1)  # [B, S]
            total[i] += cos[mask].sum()
        tokens += float(mask.sum())
    return (1.0 - total / tokens).tolist()


def _log_probs(model: nn.Module, calibration: Calibration) -> list[torch.Tensor]:
    return [F.log_softmax(model(**batch).logits.float(), dim=-1) for batch, _ in calibration]  # [B, C] each


@torch.no_grad()
def skip_damage(model: nn.Module, calibration: Calibration, teacher: list[torch.Tensor], kept: list[int],
                candidates: list[int]) -> dict[int, float]:
    """KL(teacher || model with only ``kept`` minus layer c) on the calibration batches, per candidate c."""
    damage = {}
    for candidate in candidates:
        shortened = copy.deepcopy(model)
        drop_layers(shortened, [i for i in kept if i != candidate])
        student = _log_probs(shortened, calibration)
        # batchmean KL per batch, averaged over batches: sum_c p_t (log p_t - log p_s)
        kl = [F.kl_div(s, t, log_target=True, reduction="batchmean") for s, t in zip(student, teacher)]
        damage[candidate] = float(torch.stack(kl).mean())
    return damage


def _lowest(scores: dict[int, float], count: int) -> list[int]:
    return sorted(scores, key=lambda i: (scores[i], i))[:count]


def _greedy_drops(model: nn.Module, calibration: Calibration, teacher: list[torch.Tensor],
                  first_damage: dict[int, float], to_drop: int) -> tuple[list[int], list[dict]]:
    """Drop the cheapest layer, re-measure every remaining one on the shortened model, repeat."""
    dropped, rounds, damage = [], [], first_damage
    while len(dropped) < to_drop:
        if dropped:  # re-measure on the model without the layers dropped so far
            kept = [i for i in first_damage if i not in dropped]
            damage = skip_damage(model, calibration, teacher, kept, kept)
        cheapest = _lowest(damage, 1)[0]
        dropped.append(cheapest)
        rounds.append({"dropped": cheapest, "damage": _rounded(damage)})
    return dropped, rounds


def select_layers(model: nn.Module, cfg: PruneConfig, calibration: Calibration) -> tuple[list[int], dict]:
    """The layers to keep and why: ``{"method": ..., "scores": [one per layer], "rounds": [...]}``.

    Scores are per layer of the full model, lower = less important (BI, or KL damage when skipped).
    ``rounds`` (greedy skip_loss only) lists, per round, the layer dropped and the damage of every candidate.
    """
    num_layers = len(encoder_layers(model))
    if cfg.keep_layers is not None or cfg.layer_selection == "even":
        method = "keep_layers" if cfg.keep_layers is not None else "even"
        return layers_to_keep(num_layers, cfg), {"method": method}
    to_drop = num_layers - layers_kept_count(num_layers, cfg.layer_ratio)
    model = model.eval()
    if cfg.layer_selection == "block_influence":
        scores = dict(enumerate(block_influence(model, calibration)))
        dropped, record = _lowest(scores, to_drop), {}
    else:
        with torch.no_grad():
            teacher = _log_probs(model, calibration)  # the full model's own predictions are the reference
        all_layers = list(range(num_layers))
        scores = skip_damage(model, calibration, teacher, all_layers, all_layers)
        dropped, record = _lowest(scores, to_drop), {}
        if cfg.skip_loss_greedy:
            dropped, rounds = _greedy_drops(model, calibration, teacher, scores, to_drop)
            record = {"rounds": rounds}
    keep = [i for i in range(num_layers) if i not in dropped]
    ordered = [_significant(scores[i]) for i in range(num_layers)]
    log.info("layer selection %s: scores %s -> keep %s", cfg.layer_selection, ordered, keep)
    return keep, {"method": cfg.layer_selection, "scores": ordered, **record}


def _significant(value: float) -> float:
    return float(f"{value:.4g}")  # scores span decades (KL 1e-6 .. 1): keep significant digits, not decimals


def _rounded(damage: dict[int, float]) -> dict[str, float]:
    return {str(i): _significant(v) for i, v in sorted(damage.items())}
