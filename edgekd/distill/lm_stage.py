"""Pipeline adapter for task causal-lm: distil the tuned teacher into the pruned student LM."""

import logging

from edgekd.distill.causal_lm import distill_causal_lm
from edgekd.distill.config import DistillConfig
from edgekd.models import count_parameters
from edgekd.models.io import torch_device
from edgekd.stage_context import StageContext
from edgekd.tasks.causal_lm import load_causal_lm

log = logging.getLogger(__name__)


def run_causal_lm(cfg: DistillConfig, ctx: StageContext) -> None:
    task = ctx.task
    teacher, teacher_tok = load_causal_lm(str(ctx.artifact("teacher").path))
    student, tokenizer = load_causal_lm(str(ctx.artifact("pruned").path))
    if teacher_tok.get_vocab() != tokenizer.get_vocab():
        from edgekd.errors import ConfigError

        raise ConfigError("distill: the pruned student's tokenizer differs from the teacher's; token-level KD needs "
                          "one vocabulary")
    device = torch_device(cfg.device)
    train = task.windows(tokenizer, ctx.splits, "train", ctx.max_length)
    val = task.validation_windows(tokenizer, ctx.splits, ctx.max_length)
    before = task.scores(student, val, device)
    result = distill_causal_lm(student, teacher, train, val, cfg, ctx.seed, device, tokenizer.eos_token_id,
                               evaluate=lambda m: task.scores(m, val, device))
    fit = result.fit
    lm = cfg.lm_settings()
    ctx.metrics.update(device=str(device), train_seconds=round(fit.seconds, 1), epochs_run=fit.epochs_run,
                       best_epoch=fit.best_epoch, steps=fit.steps, history=fit.history,
                       windows={"train": len(train), "validation": len(val)},
                       tokens_seen=fit.steps * cfg.batch_size * ctx.max_length,
                       loss={"kind": lm.loss, "alpha": cfg.alpha, "temperature": cfg.temperature,
                             "teacher_logits": lm.teacher_logits},
                       validation_before=before, parameters=count_parameters(student))
    if result.generated_windows:
        ctx.metrics["generated"] = {"sequences": result.generated_windows, "seconds": result.generate_seconds,
                                    "prompt_tokens": lm.generated.prompt_tokens}
    if result.topk_bytes:
        ctx.metrics["topk_cache_bytes"] = result.topk_bytes
    ctx.metrics["validation"] = task.scores(student, val, device)
    log.info("distill: validation perplexity %.2f -> %.2f (teacher-tuned student, %d steps)", before["perplexity"],
             ctx.metrics["validation"]["perplexity"], fit.steps)
    task.save(student, tokenizer, ctx.add_output(
        "student", "hf-model", "model", role="student", source="pruned", precision="fp32", runtime="pytorch",
        tokenizer="model", pad_id=tokenizer.pad_token_id, task=task.name))
