"""Structured pruning of encoder classifiers with torch-pruning.

Depth first (drop whole layers, chosen in :mod:`edgekd.prune.layers`: fewer layers to trace), then
width in one torch-pruning step: whole attention heads (q/k/v rows and the matching output-projection
columns), FFN channels (up-projection rows, down-projection columns) and, optionally, the hidden width
shared by the embeddings, every layer and the head, ranked by Taylor, weight magnitude or activation
(:mod:`edgekd.prune.importance`). torch-pruning resizes Linear weights only; the head counts the
attention modules use in their reshapes are set here afterwards.
"""

import copy
import logging
import math
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from edgekd.errors import ConfigError
from edgekd.models.arch import arch_of, base_model, encoder_layers, layer_modules, set_heads
from edgekd.models.io import count_parameters, layout_of
from edgekd.prune.config import PruneConfig
from edgekd.prune.importance import activation_importance
from edgekd.prune.layers import drop_layers, layers_to_keep, select_layers  # noqa: F401 (layers_to_keep: public)

log = logging.getLogger(__name__)


@dataclass
class PruneReport:
    parameters_before: int
    parameters_after: int
    kept_layers: list[int]
    layout: dict
    hidden_before: int
    hidden_after: int
    # How the kept layers were chosen: {"method", "scores": [one per layer, lower = dropped first], "rounds"}
    layer_selection: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def kept_width(width: int, ratio: float, multiple_of: int = 1) -> int:
    """How many of ``width`` channels survive pruning ``ratio`` of them, rounded to the nearest
    ``multiple_of`` (never below one multiple, never above ``width``)."""
    kept = max(1, math.floor(width * (1.0 - ratio) + 1e-6))  # 1e-6: 10 * (1 - 0.9) is 0.99999...
    if multiple_of > 1:
        kept = max(multiple_of, round(kept / multiple_of) * multiple_of)
        while kept > width and kept > multiple_of:
            kept -= multiple_of
    return min(kept, width)


def _tp_ratio(width: int, kept: int) -> float:
    """The ratio torch-pruning needs to keep exactly ``kept``: it keeps int(width * (1 - ratio)) channels,
    so aim half a channel above ``kept`` to be safe from float rounding either way."""
    return 1.0 - (kept + 0.5) / width


def _head_modules(model: nn.Module, keep_hidden: bool) -> list[nn.Module]:
    """Classification-side Linears whose outputs are never pruned.

    The classifier's outputs are the classes. The pooler (BERT) / pre-classifier (DistilBERT) is
    hidden -> hidden: it shrinks with the hidden width (at the same ratio, so the config's hidden
    size still describes it) and is left alone otherwise.
    """
    head = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if module.out_features == model.config.num_labels and "classifier" in name:
            head.append(module)
        elif keep_hidden and any(k in name for k in ("pooler", "pre_classifier", "classifier.dense")):
            head.append(module)
    return head


def _accumulate_taylor_grads(model: nn.Module, calibration: list[tuple[dict, torch.Tensor]]) -> None:
    """Sum of d(CE)/d(weight) over the calibration batches (Taylor importance reads .grad)."""
    model.zero_grad(set_to_none=True)
    for batch, labels in calibration:
        loss = nn.functional.cross_entropy(model(**batch).logits, labels) / len(calibration)
        loss.backward()


def _importance(model: nn.Module, cfg: PruneConfig, calibration: list[tuple[dict, torch.Tensor]]):
    if cfg.importance == "taylor":
        return tp.importance.GroupTaylorImportance()
    if cfg.importance == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    return activation_importance(model, calibration)  # measured now, on the depth-pruned model


def prune_width(model: nn.Module, cfg: PruneConfig, calibration: list[tuple[dict, torch.Tensor]]) -> None:
    """Remove heads, FFN channels and hidden width in place (ratios of what each layer has, kept widths
    rounded to ``cfg.multiple_of``)."""
    arch = arch_of(model)
    if arch.family == "mpnet" and cfg.head_ratio > 0:
        # MPNet adds one relative-position bias [buckets, heads] to every layer's scores: removing
        # different heads per layer would misalign it.
        raise ConfigError("prune.head_ratio: head pruning is not supported for MPNet; set head_ratio: 0")
    layers = encoder_layers(model)
    hidden = layer_modules(model, layers[0])["ffn_out"].out_features
    hidden_kept = kept_width(hidden, cfg.hidden_ratio, cfg.multiple_of) if cfg.hidden_ratio > 0 else hidden
    keep_hidden = hidden_kept == hidden
    num_heads, ratios, ignored = {}, {}, _head_modules(model, keep_hidden=keep_hidden)
    ffn_kept, head_dim = {}, None
    for layer in layers:
        parts = layer_modules(model, layer)
        heads = getattr(parts["attention"], arch.heads_attr)
        head_dim = parts["q"].out_features // heads
        for key in ("q", "k", "v"):
            num_heads[parts[key]] = heads
        ffn = parts["ffn_in"].out_features
        ffn_kept[parts["ffn_in"]] = kept_width(ffn, cfg.ffn_ratio, cfg.multiple_of) if cfg.ffn_ratio > 0 else ffn
        if ffn_kept[parts["ffn_in"]] < ffn:
            ratios[parts["ffn_in"]] = _tp_ratio(ffn, ffn_kept[parts["ffn_in"]])
        else:
            ignored.append(parts["ffn_in"])
        if keep_hidden:
            # Every Linear writing the residual stream roots the hidden-width group: ignoring them keeps the width.
            ignored += [parts["out"], parts["ffn_out"]]
    if keep_hidden:
        ignored += [m for m in base_model(model).embeddings.modules() if isinstance(m, nn.Embedding)]
    example, _ = calibration[0]
    pruner = tp.pruner.MetaPruner(
        model, example, importance=_importance(model, cfg, calibration),
        # The global ratio applies to the hidden-width group and the pooler (the same width, so the same
        # count). torch-pruning removes heads only when it is above zero; the groups it would apply to are
        # either ignored above or given their own ratio, so a tiny value is harmless.
        pruning_ratio=1e-6 if keep_hidden else _tp_ratio(hidden, hidden_kept),
        pruning_ratio_dict=ratios, ignored_layers=ignored, num_heads=num_heads,
        prune_num_heads=cfg.head_ratio > 0, prune_head_dims=False, head_pruning_ratio=cfg.head_ratio,
        output_transform=lambda out: out.logits.sum(),
    )
    if cfg.importance == "taylor":
        _accumulate_taylor_grads(model, calibration)
    pruner.step()
    model.zero_grad(set_to_none=True)
    for layer in layers:
        parts = layer_modules(model, layer)
        set_heads(model, layer, parts["q"].out_features // head_dim, head_dim)
        # torch-pruning derives counts from ratios; a miscount here would silently break multiple_of.
        if parts["ffn_in"].out_features != ffn_kept[parts["ffn_in"]] or parts["ffn_out"].out_features != hidden_kept:
            raise RuntimeError(f"pruning kept FFN {parts['ffn_in'].out_features} / hidden "
                               f"{parts['ffn_out'].out_features}, expected {ffn_kept[parts['ffn_in']]} / {hidden_kept}")
    _sync_config(model, head_dim)


def _sync_config(model: nn.Module, head_dim: int) -> None:
    """Write the measured widths back into the config (uniform layers make a stock-loadable model)."""
    arch = arch_of(model)
    layout = layout_of(model, [])
    # The encoder's width, read from a layer: ELECTRA's word embeddings may be narrower (embedding_size).
    hidden = layer_modules(model, encoder_layers(model)[0])["ffn_out"].out_features
    setattr(model.config, arch.cfg_hidden, hidden)
    setattr(model.config, arch.cfg_heads, max(layout["heads"]))
    setattr(model.config, arch.cfg_ffn, max(layout["ffn"]))


def prune(model: nn.Module, cfg: PruneConfig, calibration: list[tuple[dict, torch.Tensor]]) -> tuple[nn.Module, PruneReport]:
    """Return a pruned copy of ``model`` (which is left untouched) and what was removed.

    ``calibration``: (batch dict of input_ids/attention_mask [B, S], labels [B]) pairs from the train split.
    """
    if not calibration:
        raise ConfigError("prune: needs at least one calibration batch")
    before = count_parameters(model)
    hidden_before = getattr(model.config, arch_of(model).cfg_hidden)
    model = copy.deepcopy(model).eval()
    keep, selection = select_layers(model, cfg, calibration)
    drop_layers(model, keep)
    if cfg.head_ratio > 0 or cfg.ffn_ratio > 0 or cfg.hidden_ratio > 0:
        prune_width(model, cfg, calibration)
    layout = layout_of(model, keep)
    report = PruneReport(before, count_parameters(model), keep, layout, hidden_before,
                         getattr(model.config, arch_of(model).cfg_hidden), layer_selection=selection)
    log.info("pruned %d -> %d parameters (%.1f%%): layers %s, heads %s, FFN %s, hidden %d -> %d", before,
             report.parameters_after, 100 * report.parameters_after / before, keep, layout["heads"], layout["ffn"],
             hidden_before, report.hidden_after)
    return model, report
