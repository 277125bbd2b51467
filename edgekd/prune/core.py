"""Structured pruning of encoder classifiers with torch-pruning.

Depth first (drop whole layers: fewer layers to trace), then width in one torch-pruning step:
whole attention heads (q/k/v rows and the matching output-projection columns), FFN channels
(up-projection rows, down-projection columns) and, optionally, the hidden width shared by the
embeddings, every layer and the head. torch-pruning resizes Linear weights only; the head counts
the attention modules use in their reshapes are set here afterwards.
"""

import copy
import logging
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from edgekd.errors import ConfigError
from edgekd.models.arch import arch_of, base_model, encoder_layers, layer_modules, set_heads
from edgekd.models.io import count_parameters, layout_of
from edgekd.prune.config import PruneConfig

log = logging.getLogger(__name__)


@dataclass
class PruneReport:
    parameters_before: int
    parameters_after: int
    kept_layers: list[int]
    layout: dict
    hidden_before: int
    hidden_after: int
    extra: dict = field(default_factory=dict)


def layers_to_keep(num_layers: int, cfg: PruneConfig) -> list[int]:
    """Explicit ``keep_layers``, or an evenly spaced subset that keeps the first and last layer."""
    if cfg.keep_layers is not None:
        bad = [i for i in cfg.keep_layers if i >= num_layers]
        if bad:
            raise ConfigError(f"prune.keep_layers: {bad} out of range; the model has layers 0..{num_layers - 1}")
        return sorted(cfg.keep_layers)
    keep = max(1, round(num_layers * (1.0 - cfg.layer_ratio)))
    if keep == 1:
        return [num_layers - 1]
    return sorted({round(i * (num_layers - 1) / (keep - 1)) for i in range(keep)})


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


def prune_width(model: nn.Module, cfg: PruneConfig, calibration: list[tuple[dict, torch.Tensor]]) -> None:
    """Remove heads, FFN channels and hidden width in place (ratios of what each layer has)."""
    arch = arch_of(model)
    if arch.family == "mpnet" and cfg.head_ratio > 0:
        # MPNet adds one relative-position bias [buckets, heads] to every layer's scores: removing
        # different heads per layer would misalign it.
        raise ConfigError("prune.head_ratio: head pruning is not supported for MPNet; set head_ratio: 0")
    layers = encoder_layers(model)
    num_heads, ratios, ignored = {}, {}, _head_modules(model, keep_hidden=cfg.hidden_ratio == 0)
    head_dim = None
    for layer in layers:
        parts = layer_modules(model, layer)
        heads = getattr(parts["attention"], arch.heads_attr)
        head_dim = parts["q"].out_features // heads
        for key in ("q", "k", "v"):
            num_heads[parts[key]] = heads
        if cfg.ffn_ratio > 0:
            ratios[parts["ffn_in"]] = cfg.ffn_ratio
        else:
            ignored.append(parts["ffn_in"])
        if cfg.hidden_ratio == 0:
            # Every Linear writing the residual stream roots the hidden-width group: ignoring them keeps the width.
            ignored += [parts["out"], parts["ffn_out"]]
    if cfg.hidden_ratio == 0:
        ignored += [m for m in base_model(model).embeddings.modules() if isinstance(m, nn.Embedding)]
    example, _ = calibration[0]
    importance = tp.importance.GroupTaylorImportance() if cfg.importance == "taylor" else \
        tp.importance.GroupMagnitudeImportance(p=2)
    pruner = tp.pruner.MetaPruner(
        model, example, importance=importance,
        # torch-pruning removes heads only when the global ratio is above zero; the groups it would
        # apply to are either ignored above or given their own ratio, so a tiny value is harmless.
        pruning_ratio=cfg.hidden_ratio if cfg.hidden_ratio > 0 else 1e-6,
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
    keep = layers_to_keep(len(encoder_layers(model)), cfg)
    drop_layers(model, keep)
    if cfg.head_ratio > 0 or cfg.ffn_ratio > 0 or cfg.hidden_ratio > 0:
        prune_width(model, cfg, calibration)
    layout = layout_of(model, keep)
    report = PruneReport(before, count_parameters(model), keep, layout, hidden_before,
                         getattr(model.config, arch_of(model).cfg_hidden))
    log.info("pruned %d -> %d parameters (%.1f%%): layers %s, heads %s, FFN %s, hidden %d -> %d", before,
             report.parameters_after, 100 * report.parameters_after / before, keep, layout["heads"], layout["ffn"],
             hidden_before, report.hidden_after)
    return model, report
