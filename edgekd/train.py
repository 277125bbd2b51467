"""One explicit training loop for fine-tuning and distillation.

AdamW with linear warm-up and decay, gradient clipping, dynamic padding, bf16 autocast on CUDA,
evaluation on the validation split after every epoch, early stopping, and the best weights kept
in memory and restored at the end. The loss is a callable so the same loop serves both stages.
Under torchrun the same loop runs data-parallel with DDP, or FSDP when settings.data_parallel says so
(edgekd.distributed): each rank trains on a slice of every global batch, and the result equals one
process on that global batch.
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

from edgekd import distributed
from edgekd.data.tokenize import batches
from edgekd.metrics import accuracy

log = logging.getLogger(__name__)

# loss_fn(model, batch, example_indices, labels) -> scalar loss (labels is None for tasks without labels)
LossFn = Callable[[nn.Module, dict[str, torch.Tensor], list[int], torch.Tensor | None], torch.Tensor]
# evaluate(model) -> validation metrics; fit keeps the epoch whose Selection.metric is best
Evaluate = Callable[[nn.Module], dict[str, float]]


@dataclass(frozen=True)
class Selection:
    """Which validation metric picks the kept checkpoint, and its direction."""

    metric: str
    higher_is_better: bool

    def better(self, new: float, old: float | None) -> bool:
        """Whether ``new`` beats ``old``; NaN (a diverged epoch) never wins and anything beats it."""
        if math.isnan(new):
            return old is None  # the first epoch is kept even if NaN, so there is always a checkpoint
        if old is None or math.isnan(old):
            return True
        return new > old if self.higher_is_better else new < old


ACCURACY = Selection("accuracy", higher_is_better=True)


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
    data_parallel: str = "ddp"  # under torchrun: "ddp" (a full copy per rank) or "fsdp" (sharded; see edgekd.distributed)


@dataclass
class FitResult:
    best_accuracy: float  # the best value of the selection metric (accuracy for classifiers)
    best_epoch: int
    epochs_run: int
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # each step's mean loss over its global batch


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


def fit(model: nn.Module, loss_fn: LossFn, train_ids: list[list[int]], train_labels: list[int] | None,
        val_ids: list[list[int]], val_labels: list[int] | None, pad_id: int, settings: TrainSettings,
        extra_modules: list[nn.Module] = (), desc: str = "train", evaluate: Evaluate | None = None,
        selection: Selection = ACCURACY) -> FitResult:
    """Train ``model`` (and ``extra_modules``, e.g. projections) and restore its best weights.

    Without ``evaluate``, each epoch is scored by classification accuracy on ``val_ids``/``val_labels``;
    a task without labels (a language model) passes ``evaluate`` and its ``selection`` instead.

    Under torchrun (WORLD_SIZE > 1) every rank calls fit() alike: ``settings.batch_size`` stays the
    global batch, DDP averages the gradients of ``model`` and ``extra_modules``, every rank evaluates
    and keeps rank 0's scores, only rank 0 logs, and every rank returns the same best weights.
    """
    rank = distributed.init_from_env(settings.device)
    distributed.check_same_data(train_ids, train_labels, rank)
    device = distributed.local_device(settings.device, rank)
    fsdp = rank.enabled and settings.data_parallel == "fsdp"
    # FSDP trains a sharded copy ([N/world] of every weight per rank on the device) of the model where it is;
    # ``model`` gets the best weights at the end. Otherwise the model itself goes to the device.
    if not fsdp:
        model.to(device)
    model.train()
    for m in extra_modules:
        m.to(device).train()
    trained = distributed.sharded_copy(model, extra_modules, device) if fsdp else model
    params = [p for m in (trained, *extra_modules) for p in m.parameters() if p.requires_grad]
    step_loss = (lambda batch, idx, labels: loss_fn(trained, batch, idx, labels)) if fsdp else \
        distributed.loss_step(model, extra_modules, loss_fn, rank, device)
    distributed.seed_per_rank(rank)
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(train_ids) / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total, settings.warmup_ratio))
    labels_all = torch.tensor(train_labels) if train_labels is not None else None
    if evaluate is None:
        evaluate = _accuracy_on(val_ids, val_labels, pad_id, settings)
    best = FitResult(best_accuracy=float("nan"), best_epoch=0, epochs_run=0, steps=0, seconds=0.0)
    best_score: float | None = None
    best_state, bad_epochs, step, start = None, 0, 0, time.perf_counter()
    # progress in logs too (the bar is hidden when not on a terminal), five times per epoch or per max_steps run
    log_every = max(1, min(steps_per_epoch, total) // 5)
    for epoch in range(1, settings.epochs + 1):
        bar = tqdm(total=min(steps_per_epoch, total - step), desc=f"{desc} epoch {epoch}/{settings.epochs}",
                   leave=False, disable=None if rank.is_main else True)
        running, n = 0.0, 0  # n: steps taken this epoch
        for idx, batch in batches(train_ids, settings.batch_size, pad_id, True, settings.seed + epoch,
                                  settings.group_by_length):
            if step >= total:
                break
            part = distributed.slice_weight(idx, rank)  # (this rank's examples, loss scale); all of them alone
            if part is None:
                continue  # fewer examples than ranks: skipped on every rank alike
            if rank.enabled:  # rows of the globally padded batch [B, S] -> [B_r, S]
                batch = {k: v[rank.rank :: rank.world_size] for k, v in batch.items()}
            idx, weight = part
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.bf16 and device.type == "cuda"):
                labels = labels_all[idx].to(device) if labels_all is not None else None
                loss = step_loss(batch, idx, labels)
            (loss if weight == 1.0 else loss * weight).backward()  # DDP all-reduces (averages) the gradients
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step, n = step + 1, n + 1
            best.losses.append(distributed.global_loss(loss, weight, rank))
            running += best.losses[-1]
            bar.update(1)
            bar.set_postfix(loss=f"{running / n:.4f}")
            if n % log_every == 0 and rank.is_main:
                this_epoch = min(steps_per_epoch, total - (epoch - 1) * steps_per_epoch)  # (max_steps may cut it)
                log.info("%s epoch %d: step %d/%d, loss %.4f, %.2f s/step", desc, epoch, n, this_epoch,
                         running / n, (time.perf_counter() - start) / step)
        bar.close()
        # Every rank evaluates (same wall time as rank 0 alone) and keeps rank 0's scores, so every
        # rank makes the same keep / early-stop decision even if its numerics differ.
        scores = distributed.from_main(evaluate(trained), rank)  # (under FSDP every rank must run the forwards)
        score = scores[selection.metric]
        record = {"epoch": epoch, "step": step, "train_loss": running / max(1, n),
                  **{f"val_{k}": v for k, v in scores.items()}, "seconds": round(time.perf_counter() - start, 1)}
        best.history.append(record)
        best.epochs_run = epoch
        if rank.is_main:
            log.info("%s epoch %d: train loss %.4f, validation %s %.4f (%.0f s)", desc, epoch,
                     record["train_loss"], selection.metric, score, record["seconds"])
        if selection.better(score, best_score):
            best_score = best.best_accuracy = score
            best.best_epoch, bad_epochs = epoch, 0
            best_state = distributed.full_state_dict(trained) if fsdp else \
                copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            bad_epochs += 1
            if bad_epochs > settings.patience:
                if rank.is_main:
                    log.info("%s: early stop after epoch %d (best epoch %d)", desc, epoch, best.best_epoch)
                break
        if step >= total:
            break
    model.load_state_dict(best_state)
    model.cpu().eval()
    best.steps, best.seconds = step, time.perf_counter() - start
    return best


def _accuracy_on(val_ids: list[list[int]], val_labels: list[int], pad_id: int, settings: TrainSettings) -> Evaluate:
    def evaluate(model: nn.Module) -> dict[str, float]:
        pred = predict_logits(model, val_ids, pad_id, settings.device, settings.eval_batch_size,
                              settings.bf16).argmax(-1)
        return {"accuracy": accuracy(pred, np.asarray(val_labels))}

    return evaluate
