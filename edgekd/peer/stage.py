"""Pipeline adapter: the peer path on the teacher, and the peer's validation accuracy."""

import logging
from dataclasses import asdict

from edgekd.data.tokenize import encode
from edgekd.metrics import classification_metrics
from edgekd.models import load_tokenizer
from edgekd.peer.config import PEER_ARTIFACT, PeerConfig
from edgekd.peer.core import check_stock_layout, peer_quantize, require_optimum
from edgekd.quantize.core import onnx_predictions
from edgekd.stage_context import StageContext

log = logging.getLogger(__name__)


def run(cfg: PeerConfig, ctx: StageContext) -> None:
    if ctx.task.name == "causal-lm":
        from edgekd.peer.lm_stage import run_causal_lm

        return run_causal_lm(cfg, ctx)
    require_optimum()  # before the splits are read or anything is exported
    src = ctx.artifact(cfg.model)
    check_stock_layout(src.path, cfg.model)
    folder = PEER_ARTIFACT.removesuffix(".onnx")
    result = peer_quantize(src.path, ctx.out / folder, cfg)
    # The source's own tokenizer, saved as every ONNX stage does (its config carries the pad token).
    tokenizer = load_tokenizer(str(src.tokenizer or src.path))
    tokenizer.save_pretrained(ctx.out / folder)
    pad = src.pad_id if src.pad_id is not None else tokenizer.pad_token_id
    # Validation only: the test split is read once, by the benchmark.
    splits = ctx.splits
    val_ids = encode(tokenizer, splits.validation.texts, ctx.max_length)
    metrics = {k: round(v, 6) for k, v in classification_metrics(
        onnx_predictions(result.path, val_ids, pad), splits.validation.labels, len(splits.label_names)).items()}
    ctx.metrics["peer"] = {**{k: v for k, v in asdict(result).items() if k != "path"}, "model": cfg.model,
                           "preset": cfg.preset, "optimization_level": cfg.optimization_level,
                           "per_channel": cfg.per_channel, "validation": metrics}
    log.info("peer %s: %.1f MB, validation accuracy %.4f", PEER_ARTIFACT, result.file_bytes / 1e6, metrics["accuracy"])
    ctx.add_output(PEER_ARTIFACT, "onnx", f"{folder}/model.onnx", role="peer", source=cfg.model,
                   precision="int8-dynamic", runtime="onnxruntime", tokenizer=folder, pad_id=pad, task=src.task,
                   preset=cfg.preset, optimization_level=cfg.optimization_level, per_channel=cfg.per_channel,
                   fix=result.fix, validation_accuracy=metrics["accuracy"])
