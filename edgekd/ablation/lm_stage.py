"""Pipeline adapter for task causal-lm: the non-distilled student. The pruned model trained with
next-token cross-entropy only, on the training windows, for exactly as many steps of the same batch
size as the distill stage took: the same number of training tokens, no teacher."""

import math

from edgekd.ablation.config import HARD_LABELS, AblationConfig, artifact_name
from edgekd.ablation.core import distill_stage_manifest
from edgekd.distill.causal_lm import distill_causal_lm
from edgekd.distill.config import DistillConfig, GeneratedTextConfig
from edgekd.models.io import torch_device
from edgekd.stage_context import StageContext
from edgekd.tasks.causal_lm import load_causal_lm


def run_causal_lm(cfg: AblationConfig, ctx: StageContext) -> None:
    task = ctx.task
    manifest = distill_stage_manifest(ctx.history)
    distill_cfg = DistillConfig.model_validate(manifest["config"])
    distilled = manifest.get("metrics", {})
    steps = distilled["steps"]
    student, tokenizer = load_causal_lm(str(ctx.artifact("pruned").path))
    train = task.windows(tokenizer, ctx.splits, "train", ctx.max_length)
    val = task.validation_windows(tokenizer, ctx.splits, ctx.max_length)
    # Enough epochs over the training windows alone to take the distilled student's steps, no early stop.
    epochs = max(1, math.ceil(steps / math.ceil(len(train) / distill_cfg.batch_size)))
    lm = distill_cfg.lm_settings().model_copy(update={"generated": GeneratedTextConfig()})
    ce = distill_cfg.model_copy(update={"alpha": 0.0, "lm": lm, "max_steps": steps, "epochs": epochs,
                                        "patience": epochs})
    device = torch_device(ce.device)
    result = distill_causal_lm(student, None, train, val, ce, ctx.seed, device, tokenizer.eos_token_id,
                               evaluate=lambda m: task.scores(m, val, device), desc="ablation").fit
    ctx.metrics.update(
        steps=steps, budget_from=manifest.get("folder"), distilled_loss={"alpha": distill_cfg.alpha, **distilled.get(
            "loss", {})}, distilled_validation_perplexity=distilled.get("validation", {}).get("perplexity"),
        variants={HARD_LABELS: {"train_seconds": round(result.seconds, 1), "steps": result.steps,
                                "tokens_seen": result.steps * ce.batch_size * ctx.max_length,
                                "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                                "history": result.history, "validation": task.scores(student, val, device)}})
    folder = f"{HARD_LABELS}/model"
    task.save(student, tokenizer, ctx.add_output(
        artifact_name(HARD_LABELS), "hf-model", folder, role="ablation", source="pruned", precision="fp32",
        runtime="pytorch", tokenizer=folder, pad_id=tokenizer.pad_token_id, task=task.name, variant=HARD_LABELS))
