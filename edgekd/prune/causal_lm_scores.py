"""How much each decoder layer of a causal LM matters, measured on calibration token windows.

- ``block_influence`` (ShortGPT, Men et al. 2024): BI_i = 1 - mean cos(h_in, h_out) of layer i over the
  non-pad tokens. The layer inputs/outputs are captured with forward hooks on the decoder layers rather
  than read from ``output_hidden_states``: on transformers 4.57 and 5.x the last entry of that tuple is the
  *final-norm* output, so the last layer's cosine would compare a raw residual with a normed one.
- ``perplexity``: perplexity with layer i skipped (its output replaced by its input, no copy of the model)
  minus the full model's perplexity, teacher-forced over the non-pad tokens.

Higher = more important for both. :func:`kv_group_scores` ranks the KV groups of every layer the same way
(what each group writes into the residual stream) for :func:`edgekd.prune.causal_lm.prune_kv_groups`.

Windows are lists of token ids (any lengths); they are right-padded into batches with an attention mask, so
padding never changes what a real token sees (causal attention).
"""

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from edgekd.errors import ConfigError, DataError

log = logging.getLogger(__name__)
METHODS = ("block_influence", "perplexity")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a Llama-style ``*ForCausalLM`` (``model.model.layers``)."""
    layers = getattr(model.base_model, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(f"model_type {model.config.model_type!r}: no decoder layers at model.layers; "
                          "supported: Llama-style causal LMs (llama, qwen2, mistral, ...)")
    return layers


def batches(windows: list[list[int]], pad_id: int = 0, batch_size: int = 8) -> Iterator[dict[str, torch.Tensor]]:
    """Right-padded batches ``{"input_ids", "attention_mask"}`` [B, S] of the windows, in order."""
    if not windows or any(len(w) == 0 for w in windows):
        raise DataError("calibration windows: need at least one window and no empty window")
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        length = max(len(w) for w in chunk)
        ids = torch.full((len(chunk), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), length), dtype=torch.long)
        for row, window in enumerate(chunk):
            ids[row, :len(window)] = torch.as_tensor(window, dtype=torch.long)
            mask[row, :len(window)] = 1
        yield {"input_ids": ids, "attention_mask": mask}


def _pad_id(model: nn.Module) -> int:
    pad = getattr(model.config, "pad_token_id", None)
    return int(pad) if isinstance(pad, int) else 0  # any id works: the mask hides it


@contextmanager
def _hooked(handles: list):
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _layer_input(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]  # [B, S, D]


def _layer_output(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # 4.57/5.x return a tensor; older a tuple


@torch.no_grad()
def block_influence(model: nn.Module, windows: list[list[int]]) -> list[float]:
    """BI of every decoder layer: 1 - mean over non-pad tokens of cos(layer input, layer output)."""
    layers = decoder_layers(model)
    total, tokens = torch.zeros(len(layers), dtype=torch.float64), 0.0
    mask_now: dict[str, torch.Tensor] = {}

    def hook(module, args, kwargs, output, index):
        cos = F.cosine_similarity(_layer_input(args, kwargs).float(), _layer_output(output).float(), dim=-1)  # [B, S]
        total[index] += cos[mask_now["mask"]].double().sum()

    handles = [layer.register_forward_hook(lambda m, a, k, o, i=i: hook(m, a, k, o, i), with_kwargs=True)
               for i, layer in enumerate(layers)]
    with _hooked(handles):
        for batch in batches(windows, _pad_id(model)):
            mask_now["mask"] = batch["attention_mask"].bool()
            model(**batch, use_cache=False)
            tokens += float(mask_now["mask"].sum())
    return (1.0 - total / tokens).tolist()


@torch.no_grad()
def perplexity(model: nn.Module, windows: list[list[int]]) -> float:
    """exp(mean next-token NLL) over every non-pad position that has a non-pad target."""
    nll, count = 0.0, 0
    for batch in batches(windows, _pad_id(model)):
        logits = model(**batch, use_cache=False).logits[:, :-1].float()  # [B, S-1, V] predicts tokens 1..S-1
        targets = batch["input_ids"][:, 1:]  # [B, S-1]
        valid = batch["attention_mask"][:, 1:].bool()  # right padding: a valid target has a valid input before it
        nll += float(F.cross_entropy(logits[valid], targets[valid], reduction="sum"))
        count += int(valid.sum())
    if count == 0:
        raise DataError("calibration windows: perplexity needs at least one window of two or more tokens")
    return math.exp(nll / count)


def _skip(module, args, kwargs, output):
    """Forward hook making a decoder layer the identity (with use_cache=False nothing else reads it)."""
    hidden = _layer_input(args, kwargs)
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def perplexity_increase(model: nn.Module, windows: list[list[int]]) -> list[float]:
    """Per layer: perplexity with that layer skipped minus the full model's perplexity."""
    base = perplexity(model, windows)
    increases = []
    for layer in decoder_layers(model):
        with _hooked([layer.register_forward_hook(_skip, with_kwargs=True)]):
            increases.append(perplexity(model, windows) - base)
    log.info("perplexity %.4g; increase when each layer is skipped: %s", base, [f"{v:.4g}" for v in increases])
    return increases


def attention_shape(model: nn.Module) -> tuple[int, int, int]:
    """(query heads, KV heads, head_dim) read from the weights of the first layer."""
    attn = decoder_layers(model)[0].self_attn
    head_dim = attn.head_dim
    return attn.q_proj.out_features // head_dim, attn.k_proj.out_features // head_dim, head_dim


@torch.no_grad()
def kv_group_scores(model: nn.Module, windows: list[list[int]]) -> list[torch.Tensor]:
    """Per layer, one score per KV group [groups]: mean over non-pad tokens of the L2 norm of what the
    group's query heads write into the residual stream (o_proj applied to their slice of the context)."""
    heads, kv_heads, head_dim = attention_shape(model)
    width = heads // kv_heads * head_dim  # context channels per group (query heads of a group are contiguous)
    layers = decoder_layers(model)
    totals = [torch.zeros(kv_heads, dtype=torch.float64) for _ in layers]
    mask_now: dict[str, torch.Tensor] = {}

    def hook(module, args, index):
        context = args[0].float()  # [B, S, heads * head_dim]
        mask = mask_now["mask"]  # [B, S]
        for group in range(kv_heads):
            cols = slice(group * width, (group + 1) * width)
            written = context[..., cols] @ module.weight[:, cols].float().T  # [B, S, D]
            totals[index][group] += written.norm(dim=-1)[mask].double().sum()

    handles = [layer.self_attn.o_proj.register_forward_pre_hook(lambda m, a, i=i: hook(m, a, i))
               for i, layer in enumerate(layers)]
    tokens = 0.0
    was_training = model.training
    model.eval()
    try:
        for batch in batches(windows):
            mask_now["mask"] = batch["attention_mask"].bool()
            model(**batch, use_cache=False)
            tokens += float(mask_now["mask"].sum())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [(total / tokens).float() for total in totals]


def layer_scores(model: nn.Module, windows: list[list[int]], method: str = "block_influence") -> list[float]:
    """One importance score per decoder layer (higher = more important), in layer order."""
    if method not in METHODS:
        raise ConfigError(f"layer_method: {method!r} is not one of {', '.join(METHODS)}")
    was_training = model.training
    model.eval()
    try:
        return block_influence(model, windows) if method == "block_influence" else perplexity_increase(model, windows)
    finally:
        model.train(was_training)
