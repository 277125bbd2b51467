"""Pipeline adapter: distil the fine-tuned teacher into the pruned student."""

import time

import numpy as np

from edgekd.data.tokenize import encode
from edgekd.distill.augment import build_extra_examples, extra_data_metrics
from edgekd.distill.config import DistillConfig
from edgekd.distill.core import check_same_tokenizer, distill
from edgekd.evaluate import evaluate
from edgekd.models import count_parameters, load_classifier, load_tokenizer, save_classifier
from edgekd.models.io import torch_device
from edgekd.stage_context import StageContext


def run(cfg: DistillConfig, ctx: StageContext) -> None:
    if ctx.task.name == "causal-lm":
        from edgekd.distill.lm_stage import run_causal_lm

        return run_causal_lm(cfg, ctx)
    teacher_dir, pruned_dir = str(ctx.artifact("teacher").path), str(ctx.artifact("pruned").path)
    # Attention maps are only returned by the eager implementation.
    attn = "eager" if cfg.gamma > 0 else "sdpa"
    teacher = load_classifier(teacher_dir, attn_implementation=attn)
    student = load_classifier(pruned_dir, attn_implementation=attn)
    tokenizer = load_tokenizer(pruned_dir)
    check_same_tokenizer(load_tokenizer(str(ctx.artifact("teacher").tokenizer or teacher_dir)), tokenizer)
    splits = ctx.splits
    device = torch_device(cfg.device)
    extra, extra_metrics = None, {}
    if cfg.extra_data.enabled:
        start = time.perf_counter()
        train_ids = encode(tokenizer, splits.train.texts, ctx.max_length)
        extra = build_extra_examples(tokenizer, teacher, splits.unlabelled, train_ids, cfg.extra_data, ctx.seed,
                                     ctx.max_length)
        extra_metrics = {"build_seconds": round(time.perf_counter() - start, 1)}
    result, logits = distill(student, teacher, tokenizer, splits, cfg, ctx.seed, ctx.max_length, device,
                             extra_examples=extra)
    np.save(ctx.out / "teacher_logits.npy", logits)  # [N_train + N_extra, C]: the training split's rows first
    if extra is not None:
        n_train = len(splits.train)
        ctx.metrics["extra_data"] = {**extra_data_metrics(extra, logits[n_train:], n_train, splits.label_names),
                                     **extra_metrics}
    ctx.metrics.update(device=str(device), train_seconds=round(result.seconds, 1), epochs_run=result.epochs_run,
                       best_epoch=result.best_epoch, steps=result.steps, history=result.history,
                       parameters=count_parameters(student))
    n = len(splits.label_names)
    ctx.metrics["validation"] = evaluate(student, tokenizer, splits.validation, n, ctx.max_length)
    layout = getattr(student.config, "edgekd_layout", None)
    save_classifier(student, tokenizer, ctx.add_output(
        "student", "hf-model", "model", role="student", source="pruned", precision="fp32", runtime="pytorch",
        tokenizer="model", pad_id=tokenizer.pad_token_id, task="text-classification"), layout=layout)
