"""MiniLM-style self-attention relation transfer (Wang et al. 2020, MiniLM; Wang et al. 2021, MiniLMv2).

A layer's queries, keys and values are read from its q/k/v Linears with forward hooks (the models are
not edited). Each is the heads concatenated, [B, S, A] with A = heads * head_dim. MiniLMv2 re-splits
that into the same number R of *relation heads* for student and teacher, so that a pruned student
with fewer attention heads (and a narrower A) is still compared head for head:

    relation_r(X) = softmax(X_r X_r^T / sqrt(A / R))      X_r: [B, S, A / R],  relation: [B, R, S, S]

The loss is KL(teacher relation || student relation) of each query row, over real keys only, averaged
over relation heads and real query positions, then over the relations (qq, kk, vv) and mapped layers.
Relations of Q-Q and K-K transfer the attention distributions (MiniLM's attention transfer, split
into its two factors); V-V is MiniLM's value-relation transfer.
"""

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

from edgekd.distill.losses import masked_mean
from edgekd.errors import ConfigError
from edgekd.models.arch import encoder_layers, layer_modules


@contextmanager
def record_qkv(model: nn.Module, layers: Iterable[int]) -> Iterator[dict[int, dict[str, torch.Tensor]]]:
    """Yield {layer: {"q"|"k"|"v": [B, S, A]}}, filled by the forward passes run inside the block.

    Hooks exist only inside the block, so other forwards (evaluation, logit caching) keep nothing.
    The tensors keep their autograd graph: a student's relations are differentiable.
    """
    store: dict[int, dict[str, torch.Tensor]] = {}
    handles = []
    all_layers = encoder_layers(model)
    try:
        for i in layers:
            modules = layer_modules(model, all_layers[i])
            for name in ("q", "k", "v"):
                handles.append(modules[name].register_forward_hook(partial(_keep, store.setdefault(i, {}), name)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def _keep(slot: dict, name: str, module: nn.Module, inputs, output: torch.Tensor) -> None:
    slot[name] = output


def attention_width(model: nn.Module, layer: int) -> int:
    """A = heads * head_dim of one layer (the q Linear's output width; pruned layers may differ)."""
    return layer_modules(model, encoder_layers(model)[layer])["q"].out_features


def check_relation_heads(relation_heads: int, layer_map: dict[int, int], student: nn.Module,
                         teacher: nn.Module) -> None:
    for role, model, layers in (("student", student, layer_map.keys()), ("teacher", teacher, layer_map.values())):
        for i in sorted(set(layers)):
            width = attention_width(model, i)
            if width % relation_heads:
                raise ConfigError(f"distill.relation_heads: {relation_heads} does not divide the {role}'s attention "
                                  f"width {width} (layer {i}); use a common divisor of both models' widths")


def relation_log_probs(x: torch.Tensor, key_mask: torch.Tensor, heads: int) -> torch.Tensor:
    """log softmax(X_r X_r^T / sqrt(d)) over the keys: x [B, S, A], key_mask [B, S] bool -> [B, R, S, S]."""
    b, s, width = x.shape
    d = width // heads
    # float32 even inside fit()'s bf16 autocast: bf16 scores make the KL of close relations mostly rounding
    with torch.autocast(x.device.type, enabled=False):
        x = x.float().reshape(b, s, heads, d).transpose(1, 2)  # [B, R, S, d]
        scores = x @ x.transpose(-1, -2) / math.sqrt(d)  # [B, R, S, S]
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)  # pad keys: p = 0
        return scores.log_softmax(dim=-1)


class RelationLoss(nn.Module):
    """Mean KL(teacher || student) of Q-Q / K-K / V-V relations over ``layer_map`` {student: teacher layer}."""

    def __init__(self, layer_map: dict[int, int], relations: Iterable[str], relation_heads: int):
        super().__init__()
        self.layer_map = dict(sorted(layer_map.items()))
        self.relations = tuple(relations)  # e.g. ("qq", "kk", "vv"); "qq" relates queries to queries
        self.relation_heads = relation_heads

    def forward(self, student_qkv: dict[int, dict[str, torch.Tensor]], teacher_qkv: dict[int, dict[str, torch.Tensor]],
                mask: torch.Tensor) -> torch.Tensor:
        real = mask.bool()  # [B, S]
        pad_keys = ~real[:, None, None, :]  # [B, 1, 1, S]
        losses = []
        for s, t in self.layer_map.items():
            for relation in self.relations:
                name = relation[0]
                log_p_t = relation_log_probs(teacher_qkv[t][name], real, self.relation_heads)
                log_p_s = relation_log_probs(student_qkv[s][name], real, self.relation_heads)
                # masked_fill, not multiplication: keeps 0 * (huge - huge) on pad keys from becoming NaN
                kl_rows = (log_p_t.exp() * (log_p_t - log_p_s)).masked_fill(pad_keys, 0.0).sum(-1)  # [B, R, S]
                losses.append(masked_mean(kl_rows.transpose(1, 2), mask))  # over real queries and relation heads
        return torch.stack(losses).mean()
