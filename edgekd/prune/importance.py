"""Activation-based importance (Minitron, Muralidharan et al. 2024) as a torch-pruning importance.

Over the calibration batches, a channel's importance is how strongly it is used, not how large its
weights are:

- attention head: mean L2 norm of its slice of the context (the attention output projection's input,
  [B, S, heads * head_dim]) over non-pad tokens;
- FFN channel: mean |a| of the activation after the nonlinearity (the down-projection's input, [B, S, F]);
- hidden channel: mean |x| of every LayerNorm output of the residual stream ([B, S, D]), averaged over
  the LayerNorms (embeddings and every layer);
- classification-side hidden -> hidden projection (pooler / pre-classifier): mean |input| of the last
  classifier Linear ([B, D']), so that group shrinks by activation too.

torch-pruning asks an importance for one score per channel of a group, in the group's root index space
(``group[i].root_idxs``). :class:`ActivationImportance` holds the measured scores keyed by
(module, pruning handler) and scatters them into that space; heads get their score on every one of
their channels, which the pruner averages per head.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from edgekd.models.arch import arch_of, base_model, encoder_layers, layer_modules

LINEAR_IN = tp.pruner.function.prune_linear_in_channels
LAYERNORM_OUT = tp.pruner.function.prune_layernorm_out_channels


class _MaskedMean:
    """Running mean of a per-channel statistic over the non-pad tokens of every batch seen."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0.0

    def add(self, per_token: torch.Tensor, mask: torch.Tensor) -> None:
        # per_token [B, S, C] (or [B, C] for pooled inputs, every row counts); mask [B, S] with 1 = real token
        if per_token.dim() == 2:
            summed, count = per_token.sum(0), float(per_token.shape[0])
        else:
            weights = mask.to(per_token.dtype).unsqueeze(-1)
            summed, count = (per_token * weights).sum((0, 1)), float(mask.sum())
        self.total = summed if self.total is None else self.total + summed
        self.count += count

    def value(self) -> torch.Tensor:
        return self.total / max(self.count, 1.0)


@contextmanager
def _hooks(handles: list):
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _classifier_output(model: nn.Module) -> nn.Linear | None:
    """The Linear that writes the class logits."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and "classifier" in name and module.out_features == model.config.num_labels:
            return module
    return None


@dataclass
class ActivationStats:
    heads: list[torch.Tensor]  # per layer: [heads] mean L2 norm of each head's context slice
    ffn: list[torch.Tensor]  # per layer: [F] mean |activation|
    hidden: torch.Tensor  # [D] mean |LayerNorm output|, averaged over the residual-stream LayerNorms
    layernorms: list[nn.LayerNorm]  # those LayerNorms
    classifier: nn.Linear | None  # the Linear writing the logits
    classifier_in: torch.Tensor | None  # [D'] mean |input| of that Linear


@torch.no_grad()
def activation_scores(model: nn.Module, calibration: list[tuple[dict, torch.Tensor]]) -> ActivationStats:
    """Measure the activation statistics of ``model`` over the calibration batches (non-pad tokens only)."""
    arch = arch_of(model)
    layers = encoder_layers(model)
    hidden = layer_modules(model, layers[0])["ffn_out"].out_features
    heads_stat = [_MaskedMean() for _ in layers]
    ffn_stat = [_MaskedMean() for _ in layers]
    hidden_stat: dict[nn.Module, _MaskedMean] = {}
    classifier_stat = _MaskedMean()
    mask_now: dict[str, torch.Tensor] = {}  # the batch being run: hooks see tensors, not the attention mask
    handles = []

    for index, layer in enumerate(layers):
        parts = layer_modules(model, layer)
        n_heads = getattr(parts["attention"], arch.heads_attr)

        def heads_hook(module, args, index=index, n_heads=n_heads):
            context = args[0]  # [B, S, heads * head_dim]
            per_head = context.unflatten(-1, (n_heads, -1)).norm(dim=-1)  # [B, S, heads]
            heads_stat[index].add(per_head, mask_now["mask"])

        def ffn_hook(module, args, index=index):
            ffn_stat[index].add(args[0].abs(), mask_now["mask"])  # [B, S, F] after the nonlinearity

        handles.append(parts["out"].register_forward_pre_hook(heads_hook))
        handles.append(parts["ffn_out"].register_forward_pre_hook(ffn_hook))

    for module in base_model(model).modules():
        # Residual-stream LayerNorms only (ELECTRA's embedding LayerNorm may be narrower than the encoder).
        if isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) == (hidden,):
            hidden_stat[module] = _MaskedMean()

            def hidden_hook(module, args, output):
                hidden_stat[module].add(output.abs(), mask_now["mask"])  # [B, S, D]

            handles.append(module.register_forward_hook(hidden_hook))

    classifier = _classifier_output(model)
    if classifier is not None:
        def classifier_hook(module, args):
            x = args[0]  # [B, D'] pooled features (BERT, DistilBERT, RoBERTa heads all pool before this Linear)
            if x.dim() == 2:
                classifier_stat.add(x.abs(), mask_now["mask"])

        handles.append(classifier.register_forward_pre_hook(classifier_hook))

    was_training = model.training
    model.eval()
    with _hooks(handles):
        for batch, _ in calibration:
            mask_now["mask"] = batch["attention_mask"]
            model(**batch)
    model.train(was_training)
    return ActivationStats(
        heads=[s.value() for s in heads_stat], ffn=[s.value() for s in ffn_stat],
        hidden=torch.stack([s.value() for s in hidden_stat.values()]).mean(0), layernorms=list(hidden_stat),
        classifier=classifier, classifier_in=classifier_stat.value() if classifier_stat.count else None,
    )


class ActivationImportance(tp.importance.Importance):
    """Scores measured once, looked up per group: ``scores[(module, handler)]`` is one score per channel of
    ``module`` along the dimension ``handler`` prunes. A group's score per root channel is the mean over
    its members that have scores; a group with none returns None (torch-pruning then leaves it alone)."""

    def __init__(self, scores: dict[tuple[nn.Module, object], torch.Tensor]):
        self.scores = scores

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        size = len(group[0].root_idxs)
        total, count = torch.zeros(size), torch.zeros(size)
        for item in group:
            dep, idxs, root_idxs = item.dep, item.idxs, item.root_idxs
            score = self.scores.get((dep.target.module, dep.handler))
            if score is None or any(r is None for r in root_idxs):
                continue
            root = torch.as_tensor(list(root_idxs), dtype=torch.long)
            total.scatter_add_(0, root, score[list(idxs)].float())
            count.scatter_add_(0, root, torch.ones(len(root)))
        if not bool(count.gt(0).any()):
            return None
        return total / count.clamp(min=1)


def activation_importance(model: nn.Module, calibration: list[tuple[dict, torch.Tensor]]) -> ActivationImportance:
    """Measure ``model`` on the calibration batches and key the scores by the modules torch-pruning will prune."""
    measured = activation_scores(model, calibration)
    scores: dict[tuple[nn.Module, object], torch.Tensor] = {}
    for layer, heads, ffn in zip(encoder_layers(model), measured.heads, measured.ffn):
        parts = layer_modules(model, layer)
        head_dim = parts["out"].in_features // len(heads)
        # Attention groups are rooted at the output projection's input: one score per context channel.
        scores[(parts["out"], LINEAR_IN)] = heads.repeat_interleave(head_dim)
        scores[(parts["ffn_out"], LINEAR_IN)] = ffn
    for norm in measured.layernorms:
        scores[(norm, LAYERNORM_OUT)] = measured.hidden
    if measured.classifier_in is not None:
        scores[(measured.classifier, LINEAR_IN)] = measured.classifier_in
    return ActivationImportance(scores)
