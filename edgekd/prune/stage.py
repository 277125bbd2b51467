"""Pipeline adapter: prune the teacher with calibration batches from the train split."""

import dataclasses

import torch

from edgekd.data.tokenize import batches, encode
from edgekd.evaluate import evaluate
from edgekd.models import load_classifier, load_tokenizer, save_classifier
from edgekd.prune.budget import config_for_target, median_length
from edgekd.prune.config import PruneConfig
from edgekd.prune.core import prune
from edgekd.prune.lowrank import factorize_linears
from edgekd.stage_context import StageContext


def calibration_batches(tokenizer, texts: list[str], labels: list[int], max_length: int, batch_size: int,
                        count: int) -> list[tuple[dict, torch.Tensor]]:
    """The first ``count`` batches of the (already shuffled) train split, with their labels."""
    ids = encode(tokenizer, texts[: batch_size * count], max_length)
    return [(batch, torch.tensor([labels[i] for i in idx])) for idx, batch in batches(ids, batch_size,
                                                                                       tokenizer.pad_token_id)]


def run(cfg: PruneConfig, ctx: StageContext) -> None:
    if ctx.task.name == "causal-lm":
        from edgekd.prune.lm_stage import run_causal_lm

        return run_causal_lm(cfg, ctx)
    teacher_dir = str(ctx.artifact("teacher").path)
    tokenizer = load_tokenizer(teacher_dir)
    teacher = load_classifier(teacher_dir)
    splits = ctx.splits
    if cfg.target is not None:  # a latency budget picks the ratios, by timing candidate shapes on this machine
        length = cfg.target.sequence_length or median_length(tokenizer, splits.train.texts, ctx.max_length)
        cfg, ctx.metrics["budget"] = config_for_target(
            cfg, load_classifier(teacher_dir, attn_implementation="eager"), tokenizer.pad_token_id, length)
    calib = calibration_batches(tokenizer, splits.train.texts, splits.train.labels, ctx.max_length,
                                cfg.calibration_batch_size, cfg.calibration_batches)
    student, report = prune(teacher, cfg, calib)
    ctx.metrics.update(dataclasses.asdict(report))
    ctx.metrics["parameter_ratio"] = round(report.parameters_after / report.parameters_before, 4)
    if cfg.low_rank is not None:  # after pruning, before distillation; the ranks travel in config.json
        lr = cfg.low_rank
        ctx.metrics["low_rank"] = dataclasses.asdict(
            factorize_linears(student, lr.rank, lr.energy, lr.include, lr.multiple_of))
    # Accuracy right after pruning, before any recovery: how much distillation has to win back.
    ctx.metrics["validation"] = evaluate(student, tokenizer, splits.validation, len(splits.label_names), ctx.max_length)
    save_classifier(student, tokenizer, ctx.add_output(
        "pruned", "hf-model", "model", role="pruned", source="teacher", precision="fp32", runtime="pytorch",
        tokenizer="model", pad_id=tokenizer.pad_token_id, task="text-classification"), layout=report.layout)
