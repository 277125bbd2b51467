"""Structured pruning of Llama-style decoder LMs (Llama, Qwen2, Mistral, SmolLM2...) that stays loadable.

Every layer keeps the same shape, so a stock ``from_pretrained`` reloads the result and KV-cache runtimes
(ONNX with past, ORT GenAI) see one head count and one FFN width:

- depth: keep a subset of decoder layers, chosen by :func:`layer_scores` (Block Influence or perplexity
  increase) or given; ``layer_idx`` renumbered (the KV cache is indexed by it), ``num_hidden_layers`` and
  ``layer_types`` (Qwen2, transformers 5) cut to match;
- FFN: the same intermediate width in every layer, channels ranked and removed by torch-pruning
  (gate/up rows and down columns together; attention, embeddings and lm_head untouched);
- attention: whole KV groups (one KV head and the query heads that share it), the same count per layer, so the
  GQA ratio and ``head_dim`` are unchanged; ranked by how much each group writes into the residual stream.

Everything here works in place on the model it is given.
"""

import logging

import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional as F

from edgekd.errors import ConfigError
from edgekd.prune.causal_lm_scores import attention_shape, batches, decoder_layers, kv_group_scores, layer_scores
from edgekd.prune.core import _tp_ratio, kept_width

log = logging.getLogger(__name__)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once


def drop_layers(model: nn.Module, keep: list[int]) -> None:
    """Keep decoder layers ``keep`` (in increasing order) and make the config describe the result."""
    layers = decoder_layers(model)
    if not keep or len(set(keep)) != len(keep) or any(not 0 <= i < len(layers) for i in keep):
        raise ConfigError(f"keep_layers: {keep} must be distinct layer indices in 0..{len(layers) - 1}, at least one")
    keep = sorted(keep)
    kept = nn.ModuleList([layers[i] for i in keep])
    for new_index, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):  # the attention module indexes the KV cache with it
                module.layer_idx = new_index
    model.base_model.layers = kept
    config = model.config
    if getattr(config, "layer_types", None) is not None:
        # Qwen2 (and transformers 5 models) pick each layer's mask (full / sliding) from this list by index.
        config.layer_types = [config.layer_types[i] for i in keep]
    config.num_hidden_layers = len(keep)


def _mlp(layer: nn.Module) -> nn.Module:
    mlp = getattr(layer, "mlp", None)
    if mlp is None or not all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj")):
        raise ConfigError("prune_ffn: needs LlamaMLP-style blocks (mlp.gate_proj / up_proj / down_proj) in every layer")
    return mlp


def _attention_linears(model: nn.Module) -> list[nn.Module]:
    return [getattr(layer.self_attn, name) for layer in decoder_layers(model)
            for name in ("q_proj", "k_proj", "v_proj", "o_proj")]


def _lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over non-pad targets of one batch."""
    logits = model(**batch, use_cache=False).logits[:, :-1]  # [B, S-1, V]
    valid = batch["attention_mask"][:, 1:].bool()  # [B, S-1]
    return F.cross_entropy(logits[valid].float(), batch["input_ids"][:, 1:][valid])


def _taylor_grads(model: nn.Module, windows: list[list[int]]) -> None:
    """Accumulate d(LM loss)/d(weight) over all windows (GroupTaylorImportance reads .grad)."""
    model.zero_grad(set_to_none=True)
    chunks = list(batches(windows))
    for batch in chunks:
        (_lm_loss(model, batch) / len(chunks)).backward()


def prune_ffn(model: nn.Module, ratio: float, windows: list[list[int]], multiple_of: int = 32,
              importance: str = "magnitude") -> int:
    """Remove ``ratio`` of the FFN channels, the same kept width in every layer (rounded to ``multiple_of``).

    Returns the kept width, also written to ``config.intermediate_size``.
    """
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"ffn_ratio: {ratio} must be in [0, 1)")
    if importance not in ("magnitude", "taylor"):
        raise ConfigError(f"ffn_importance: {importance!r} is not one of magnitude, taylor")
    mlps = [_mlp(layer) for layer in decoder_layers(model)]
    widths = {m.gate_proj.out_features for m in mlps}
    if len(widths) != 1:
        raise ConfigError(f"prune_ffn: FFN widths differ between layers ({sorted(widths)}); expected one width")
    width = widths.pop()
    kept = kept_width(width, ratio, multiple_of)
    if kept == width:
        return width
    # Both gate and up get the ratio: torch-pruning roots the coupled group (gate rows, up rows, down columns)
    # at whichever it meets first. The hidden width (global ratio 0) and attention stay as they are.
    ratios = {lin: _tp_ratio(width, kept) for m in mlps for lin in (m.gate_proj, m.up_proj)}
    ignored = _attention_linears(model) + [m.down_proj for m in mlps] + [model.get_input_embeddings()]
    if model.get_output_embeddings() is not None:
        ignored.append(model.get_output_embeddings())
    example = next(batches(windows[:1]))["input_ids"]  # [1, S]
    taylor = importance == "taylor"
    imp = tp.importance.GroupTaylorImportance() if taylor else tp.importance.GroupMagnitudeImportance(p=2)
    was_training = model.training
    model.eval()
    # RMSNorm weights [D] are parameters of modules torch-pruning does not know: name their (hidden) dimension.
    norms = [(m.weight, 0) for m in model.modules() if not isinstance(m, (nn.Linear, nn.Embedding))
             and isinstance(m._parameters.get("weight"), nn.Parameter) and m.weight.dim() == 1]
    pruner = tp.pruner.MetaPruner(
        model, example, importance=imp, pruning_ratio=0.0, pruning_ratio_dict=ratios, ignored_layers=ignored,
        unwrapped_parameters=norms,
        forward_fn=lambda m, x: m(input_ids=x, use_cache=False).logits,
    )
    if taylor:
        _taylor_grads(model, windows)
    pruner.step()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    for index, m in enumerate(mlps):
        # torch-pruning derives counts from ratios; a miscount would silently break uniformity / multiple_of.
        got = (m.gate_proj.out_features, m.up_proj.out_features, m.down_proj.in_features)
        if got != (kept, kept, kept):
            raise RuntimeError(f"prune_ffn: layer {index} kept gate/up/down widths {got}, expected {kept}")
    model.config.intermediate_size = kept
    log.info("FFN width %d -> %d in %d layers (%s importance)", width, kept, len(mlps), importance)
    return kept


def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.data[rows].clone())
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.data[rows].clone())
    linear.out_features = len(rows)


def _keep_columns(linear: nn.Linear, columns: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.data[:, columns].clone())  # the bias is per output: unchanged
    linear.in_features = len(columns)


def _channels(groups: list[int], per_group: int) -> torch.Tensor:
    """Channel indices of the kept groups when each group owns ``per_group`` contiguous channels."""
    return torch.cat([torch.arange(g * per_group, (g + 1) * per_group) for g in groups])


def prune_kv_groups(model: nn.Module, keep_groups: int, windows: list[list[int]]) -> list[list[int]]:
    """Keep the ``keep_groups`` most important KV groups in every layer; returns the kept groups per layer."""
    heads, kv_heads, head_dim = attention_shape(model)
    if not 1 <= keep_groups <= kv_heads:
        raise ConfigError(f"kv_groups: {keep_groups} must be in 1..{kv_heads} (the model's num_key_value_heads)")
    rep = heads // kv_heads  # query heads per KV head (the GQA ratio, unchanged)
    kept_all = []
    scores = kv_group_scores(model, windows) if keep_groups < kv_heads else []
    for layer, score in zip(decoder_layers(model), scores):
        # Highest scores, back in their original order (the cache layout keeps group order).
        kept = sorted(torch.argsort(score, descending=True, stable=True)[:keep_groups].tolist())
        attn = layer.self_attn
        query = _channels(kept, rep * head_dim)  # q rows == o columns: [keep * rep * head_dim]
        key_value = _channels(kept, head_dim)  # k / v rows: [keep * head_dim]
        _keep_rows(attn.q_proj, query)
        _keep_rows(attn.k_proj, key_value)
        _keep_rows(attn.v_proj, key_value)
        _keep_columns(attn.o_proj, query)
        for name, value in (("num_heads", keep_groups * rep), ("num_attention_heads", keep_groups * rep),
                            ("num_key_value_heads", keep_groups)):
            if hasattr(attn, name):  # other families keep the counts on the module for their reshapes
                setattr(attn, name, value)
        kept_all.append(kept)
    config = model.config
    config.num_attention_heads = keep_groups * rep
    config.num_key_value_heads = keep_groups
    # Qwen2 derives head_dim from hidden_size / heads (and RoPE reads it): pin it so a reload keeps it.
    config.head_dim = head_dim
    if kept_all:
        log.info("KV groups %d -> %d per layer (query heads %d -> %d); kept %s", kv_heads, keep_groups, heads,
                 keep_groups * rep, kept_all)
    return kept_all


def prune_causal_lm(model: nn.Module, windows: list[list[int]], keep_layers: int | list[int] | None = None,
                    ffn_ratio: float = 0.0, kv_groups: int | None = None, layer_method: str = "block_influence",
                    multiple_of: int = 32, ffn_importance: str = "magnitude") -> dict:
    """Depth, then KV groups, then FFN width, in place; every importance is measured on the model as it is
    at that step. ``keep_layers``: how many layers to keep (the highest ``layer_method`` scores), which ones
    (indices), or None for all. Returns what was kept, the layer scores and parameter counts."""
    before = _count(model)
    layers = len(decoder_layers(model))
    report: dict = {"parameters_before": before, "layers_before": layers, "layer_method": None, "layer_scores": None}
    keep = list(range(layers))
    if isinstance(keep_layers, int) and not isinstance(keep_layers, bool):
        if not 1 <= keep_layers <= layers:
            raise ConfigError(f"keep_layers: {keep_layers} must be in 1..{layers} (the model's layer count)")
        scores = layer_scores(model, windows, layer_method)
        ranked = sorted(range(layers), key=lambda i: (-scores[i], i))  # ties: keep the earlier layer
        keep = sorted(ranked[:keep_layers])
        report.update(layer_method=layer_method, layer_scores=[float(f"{s:.4g}") for s in scores])
        log.info("layer scores (%s) %s -> keep %s", layer_method, report["layer_scores"], keep)
    elif keep_layers is not None:
        keep = list(keep_layers)
    if keep != list(range(layers)):
        drop_layers(model, keep)
    heads, kv_heads, head_dim = attention_shape(model)
    kept_groups = prune_kv_groups(model, kv_groups, windows) if kv_groups is not None else []
    ffn_before = _mlp(decoder_layers(model)[0]).gate_proj.out_features
    ffn_after = prune_ffn(model, ffn_ratio, windows, multiple_of, ffn_importance) if ffn_ratio > 0 else ffn_before
    after = _count(model)
    heads_after, kv_heads_after, _ = attention_shape(model)
    report.update(
        kept_layers=sorted(keep), heads_before=heads, heads_after=heads_after, kv_heads_before=kv_heads,
        kv_heads_after=kv_heads_after, kept_kv_groups=kept_groups, head_dim=head_dim, ffn_before=ffn_before,
        ffn_after=ffn_after, parameters_after=after,
    )
    log.info("pruned causal LM %d -> %d parameters (%.1f%%): layers %s, KV heads %d -> %d, FFN %d -> %d", before,
             after, 100 * after / before, report["kept_layers"], kv_heads, report["kv_heads_after"], ffn_before,
             ffn_after)
    return report
