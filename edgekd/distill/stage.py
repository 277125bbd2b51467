"""Pipeline adapter: distil the fine-tuned teacher into the pruned student."""

import numpy as np

from edgekd.distill.config import DistillConfig
from edgekd.distill.core import distill
from edgekd.evaluate import evaluate
from edgekd.models import count_parameters, load_classifier, load_tokenizer, save_classifier
from edgekd.models.io import torch_device
from edgekd.stage_context import StageContext


def run(cfg: DistillConfig, ctx: StageContext) -> None:
    teacher_dir, pruned_dir = str(ctx.artifact("teacher").path), str(ctx.artifact("pruned").path)
    # Attention maps are only returned by the eager implementation.
    attn = "eager" if cfg.gamma > 0 else "sdpa"
    teacher = load_classifier(teacher_dir, attn_implementation=attn)
    student = load_classifier(pruned_dir, attn_implementation=attn)
    tokenizer = load_tokenizer(pruned_dir)
    splits = ctx.splits
    device = torch_device(cfg.device)
    result, logits = distill(student, teacher, tokenizer, splits, cfg, ctx.seed, ctx.max_length, device)
    np.save(ctx.out / "teacher_logits.npy", logits)
    ctx.metrics.update(device=str(device), train_seconds=round(result.seconds, 1), epochs_run=result.epochs_run,
                       best_epoch=result.best_epoch, steps=result.steps, history=result.history,
                       parameters=count_parameters(student))
    n = len(splits.label_names)
    ctx.metrics["validation"] = evaluate(student, tokenizer, splits.validation, n, ctx.max_length)
    layout = getattr(student.config, "edgekd_layout", None)
    save_classifier(student, tokenizer, ctx.add_output(
        "student", "hf-model", "model", role="student", source="pruned", precision="fp32", runtime="pytorch",
        tokenizer="model", pad_id=tokenizer.pad_token_id, task="text-classification"), layout=layout)
