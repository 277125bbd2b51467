"""Pipeline adapter: resolve the model, fine-tune it on the task's data, save it as the 'teacher' artifact.

What training means (the head, the loss, the metric that picks the checkpoint) comes from the
pipeline's task (edgekd.tasks); this adapter is the same for classifiers and language models.
"""

import logging

from edgekd.assets import resolve_model_dir
from edgekd.models import count_parameters
from edgekd.models.io import torch_device
from edgekd.stage_context import StageContext
from edgekd.teacher.config import TeacherConfig

log = logging.getLogger(__name__)


def run(cfg: TeacherConfig, ctx: StageContext) -> None:
    model_source = ctx.setting("model_source")
    source = resolve_model_dir(model_source)
    task, splits = ctx.task, ctx.splits
    model, tokenizer = task.load_for_training(source, splits, cfg.finetune)
    if cfg.finetune:
        device = torch_device(cfg.device)
        result = task.finetune(model, tokenizer, splits, cfg, ctx.seed, ctx.max_length, device)
        ctx.metrics.update(device=str(device), device_name=_device_name(device), train_seconds=round(result.seconds, 1),
                           epochs_run=result.epochs_run, best_epoch=result.best_epoch, steps=result.steps,
                           history=result.history)
    # Validation only: the test split is read once, by the benchmark, for the final report.
    ctx.metrics["validation"] = task.validate(model, tokenizer, splits, ctx.max_length)
    ctx.metrics["parameters"] = count_parameters(model)
    metric = task.selection.metric
    log.info("teacher: validation %s %.4f, %d parameters", metric, ctx.metrics["validation"][metric],
             ctx.metrics["parameters"])
    task.save(model, tokenizer, ctx.add_output(
        "teacher", "hf-model", "model", role="teacher", precision="fp32", runtime="pytorch", tokenizer="model",
        pad_id=tokenizer.pad_token_id, task=task.name, model_source=model_source))


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine()
