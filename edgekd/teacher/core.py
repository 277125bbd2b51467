"""Fine-tune a pretrained encoder as a sequence classifier: the teacher."""

import logging

import torch

from edgekd.data.split import Splits
from edgekd.data.tokenize import encode
from edgekd.teacher.config import TeacherConfig
from edgekd.train import FitResult, TrainSettings, fit

log = logging.getLogger(__name__)


def settings_from(cfg, seed: int, device: torch.device) -> TrainSettings:
    return TrainSettings(
        epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        warmup_ratio=cfg.warmup_ratio, patience=cfg.patience, max_steps=cfg.max_steps, seed=seed, device=device,
        bf16=cfg.bf16, group_by_length=cfg.group_by_length, data_parallel=cfg.data_parallel,
    )


def cross_entropy_loss(model, batch, idx, labels) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(**batch).logits.float(), labels)


def finetune(model, tokenizer, splits: Splits, cfg: TeacherConfig, seed: int, max_length: int,
             device: torch.device) -> FitResult:
    """Train ``model`` in place with cross-entropy; its best validation weights are restored."""
    torch.manual_seed(seed)
    train_ids = encode(tokenizer, splits.train.texts, max_length)
    val_ids = encode(tokenizer, splits.validation.texts, max_length)
    log.info("fine-tuning the teacher on %s: %d train / %d validation examples", device, len(train_ids), len(val_ids))
    return fit(model, cross_entropy_loss, train_ids, splits.train.labels, val_ids, splits.validation.labels,
               tokenizer.pad_token_id, settings_from(cfg, seed, device), desc="teacher")
