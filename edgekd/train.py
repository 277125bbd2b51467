"""One explicit training loop for fine-tuning and distillation.

AdamW with linear warm-up and decay, gradient clipping, dynamic padding, bf16 autocast on CUDA,
evaluation on the validation split after every epoch, early stopping, and the best weights kept
in memory and restored at the end. The loss is a callable so the same loop serves both stages.
"""

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from edgekd.data.tokenize import batches
from edgekd.metrics import accuracy

log = logging.getLogger(__name__)

# loss_fn(model, batch, example_indices, labels) -> scalar loss
LossFn = Callable[[nn.Module, dict[str, torch.Tensor], list[int], torch.Tensor], torch.Tensor]


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    patience: int
    max_steps: int | None
    seed: int
    device: torch.device
    bf16: bool
    group_by_length: bool = True
    eval_batch_size: int = 128


@dataclass
class FitResult:
    best_accuracy: float
    best_epoch: int
    epochs_run: int
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)


@torch.inference_mode()
def predict_logits(model: nn.Module, ids: list[list[int]], pad_id: int, device: torch.device,
                   batch_size: int = 128, bf16: bool = False) -> np.ndarray:
    """Logits [N, num_classes] as float32, in the order of ``ids``.

    Batches are cut from the texts sorted by length (little padding, so several times faster on
    short texts) and the logits are put back in the order of ``ids``.
    """
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    for idx, batch in batches(ids, batch_size, pad_id, group_by_length=True):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
            logits = model(**batch).logits.float().cpu().numpy()
        if out is None:
            out = np.empty((len(ids), logits.shape[-1]), dtype=np.float32)
        out[idx] = logits
    model.train(was_training)
    return out if out is not None else np.zeros((0, model.config.num_labels), dtype=np.float32)


def _schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    warmup = max(1, math.ceil(total_steps * warmup_ratio))
    return lambda step: min((step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup)))


def fit(model: nn.Module, loss_fn: LossFn, train_ids: list[list[int]], train_labels: list[int],
        val_ids: list[list[int]], val_labels: list[int], pad_id: int, settings: TrainSettings,
        extra_modules: list[nn.Module] = (), desc: str = "train") -> FitResult:
    """Train ``model`` (and ``extra_modules``, e.g. projections) and restore its best weights."""
    device = settings.device
    model.to(device).train()
    for m in extra_modules:
        m.to(device).train()
    params = [p for m in (model, *extra_modules) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(train_ids) / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total, settings.warmup_ratio))
    labels_all = torch.tensor(train_labels)
    best = FitResult(best_accuracy=-1.0, best_epoch=0, epochs_run=0, steps=0, seconds=0.0)
    best_state, bad_epochs, step, start = None, 0, 0, time.perf_counter()
    log_every = max(1, steps_per_epoch // 5)  # progress in logs too (the bar is hidden when not on a terminal)
    for epoch in range(1, settings.epochs + 1):
        bar = tqdm(total=min(steps_per_epoch, total - step), desc=f"{desc} epoch {epoch}/{settings.epochs}",
                   leave=False, disable=None)
        running = 0.0
        for n, (idx, batch) in enumerate(batches(train_ids, settings.batch_size, pad_id, True, settings.seed + epoch,
                                                    settings.group_by_length)):
            if step >= total:
                break
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.bf16 and device.type == "cuda"):
                loss = loss_fn(model, batch, idx, labels_all[idx].to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            running += loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running / (n + 1):.4f}")
            if (n + 1) % log_every == 0:
                log.info("%s epoch %d: step %d/%d, loss %.4f, %.2f s/step", desc, epoch, n + 1, steps_per_epoch,
                         running / (n + 1), (time.perf_counter() - start) / step)
        bar.close()
        val_pred = predict_logits(model, val_ids, pad_id, device, settings.eval_batch_size, settings.bf16).argmax(-1)
        val_acc = accuracy(val_pred, np.asarray(val_labels))
        record = {"epoch": epoch, "step": step, "train_loss": running / max(1, n + 1), "val_accuracy": val_acc,
                  "seconds": round(time.perf_counter() - start, 1)}
        best.history.append(record)
        best.epochs_run = epoch
        log.info("%s epoch %d: train loss %.4f, validation accuracy %.4f (%.0f s)", desc, epoch,
                 record["train_loss"], val_acc, record["seconds"])
        if val_acc > best.best_accuracy:
            best.best_accuracy, best.best_epoch, bad_epochs = val_acc, epoch, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            bad_epochs += 1
            if bad_epochs > settings.patience:
                log.info("%s: early stop after epoch %d (best epoch %d)", desc, epoch, best.best_epoch)
                break
        if step >= total:
            break
    model.load_state_dict(best_state)
    model.cpu().eval()
    best.steps, best.seconds = step, time.perf_counter() - start
    return best
