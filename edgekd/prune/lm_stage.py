"""Pipeline adapter for task causal-lm: drop decoder layers by measured importance, remove whole KV
groups and narrow every FFN to the same width, measured on training windows; the pruned model saves
and reloads as a standard Hugging Face checkpoint (config updated, no custom layout)."""

import logging

from edgekd.data.text import evenly_spaced
from edgekd.models import count_parameters
from edgekd.prune.causal_lm import prune_causal_lm
from edgekd.prune.config import PruneConfig
from edgekd.stage_context import StageContext
from edgekd.tasks.causal_lm import load_causal_lm

log = logging.getLogger(__name__)
# skip_loss (the teacher's loss change when a layer is skipped) is, for a language model, the perplexity change.
LAYER_METHODS = {"block_influence": "block_influence", "skip_loss": "perplexity"}


def lm_prune_plan(cfg: PruneConfig, layers: int, kv_heads: int) -> tuple[int | list[int] | None, int | None]:
    """(keep_layers for prune_causal_lm, KV groups kept) from the ratios, as the encoder path rounds them."""
    if cfg.keep_layers is not None:
        keep = list(cfg.keep_layers)
    else:
        count = max(1, round(layers * (1 - cfg.layer_ratio)))
        # even: evenly spaced layers, the first and the last always kept
        keep = count if cfg.layer_selection != "even" else sorted(
            {round(i * (layers - 1) / max(1, count - 1)) for i in range(count)})
    groups = max(1, round(kv_heads * (1 - cfg.head_ratio))) if cfg.head_ratio > 0 else None
    return keep, groups


def run_causal_lm(cfg: PruneConfig, ctx: StageContext) -> None:
    task = ctx.task
    model, tokenizer = load_causal_lm(str(ctx.artifact("teacher").path))
    count = cfg.calibration_batches * cfg.calibration_batch_size
    # Evenly spaced over the training stream, so no one article dominates the importance estimates.
    windows = evenly_spaced(task.windows(tokenizer, ctx.splits, "train", ctx.max_length), count)
    keep, groups = lm_prune_plan(cfg, model.config.num_hidden_layers, model.config.num_key_value_heads)
    report = prune_causal_lm(model, windows, keep_layers=keep, ffn_ratio=cfg.ffn_ratio, kv_groups=groups,
                             layer_method=LAYER_METHODS.get(cfg.layer_selection, "block_influence"),
                             multiple_of=cfg.multiple_of, ffn_importance=cfg.importance)
    ctx.metrics.update(report, calibration_windows=len(windows),
                       parameter_ratio=round(report["parameters_after"] / report["parameters_before"], 4))
    # Perplexity right after pruning, before any recovery: how much distillation has to win back.
    ctx.metrics["validation"] = task.validate(model, tokenizer, ctx.splits, ctx.max_length)
    log.info("prune: %d -> %d parameters, kept layers %s; validation perplexity before healing %.4g",
             report["parameters_before"], count_parameters(model), report["kept_layers"],
             ctx.metrics["validation"]["perplexity"])
    task.save(model, tokenizer, ctx.add_output(
        "pruned", "hf-model", "model", role="pruned", source="teacher", precision="fp32", runtime="pytorch",
        tokenizer="model", pad_id=tokenizer.pad_token_id, task=task.name))
