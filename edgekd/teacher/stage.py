"""Pipeline adapter: resolve the model, fine-tune it, save it as the 'teacher' artifact."""

import logging
from pathlib import Path

from edgekd.assets import resolve_model_dir
from edgekd.evaluate import evaluate
from edgekd.models import count_parameters, load_classifier, load_tokenizer, save_classifier
from edgekd.models.io import torch_device
from edgekd.preflight import check_head_fits_labels
from edgekd.stage_context import StageContext
from edgekd.teacher.config import TeacherConfig
from edgekd.teacher.core import finetune

log = logging.getLogger(__name__)


def run(cfg: TeacherConfig, ctx: StageContext) -> None:
    model_source = ctx.setting("model_source")
    source = resolve_model_dir(model_source)
    splits = ctx.splits
    tokenizer = load_tokenizer(source)
    if cfg.finetune:
        model = load_classifier(source, label_names=splits.label_names)
    else:
        # Used as given, the head must already mean the data's labels: never a new (random) or reordered head.
        # Preflight checked local folders; this also covers hub models, only here once downloaded.
        model = load_classifier(source)
        check_head_fits_labels(Path(source), model.config, None, splits.label_names)
    if cfg.finetune:
        device = torch_device(cfg.device)
        result = finetune(model, tokenizer, splits, cfg, ctx.seed, ctx.max_length, device)
        ctx.metrics.update(device=str(device), device_name=_device_name(device), train_seconds=round(result.seconds, 1),
                           epochs_run=result.epochs_run, best_epoch=result.best_epoch, steps=result.steps,
                           history=result.history)
    # Validation only: the test split is read once, by the benchmark, for the final report.
    ctx.metrics["validation"] = evaluate(model, tokenizer, splits.validation, len(splits.label_names), ctx.max_length)
    ctx.metrics["parameters"] = count_parameters(model)
    log.info("teacher: validation accuracy %.4f, %d parameters", ctx.metrics["validation"]["accuracy"],
             ctx.metrics["parameters"])
    save_classifier(model, tokenizer, ctx.add_output(
        "teacher", "hf-model", "model", role="teacher", precision="fp32", runtime="pytorch", tokenizer="model",
        pad_id=tokenizer.pad_token_id, task="text-classification", model_source=model_source))


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine()
