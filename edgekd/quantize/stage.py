"""Pipeline adapter: int8 versions of each exported model, with their validation accuracy."""

import dataclasses
import logging
import tempfile
from pathlib import Path

from edgekd.artifacts import folder_size
from edgekd.data.tokenize import encode
from edgekd.metrics import classification_metrics
from edgekd.models import load_tokenizer
from edgekd.quantize.config import QuantizeConfig
from edgekd.quantize.core import (best_calibration, compare_calibrations, make_quantizer, onnx_predictions,
                                  quantizable_nodes)
from edgekd.quantize.block_embeddings import has_int4_table, with_block_embeddings
from edgekd.quantize.guard import guarded_quantize
from edgekd.stage_context import StageContext

log = logging.getLogger(__name__)


def run(cfg: QuantizeConfig, ctx: StageContext) -> None:
    if ctx.task.name == "causal-lm":
        from edgekd.quantize.lm_stage import run_causal_lm

        return run_causal_lm(cfg, ctx)
    splits = ctx.splits
    n_classes = len(splits.label_names)
    for name in cfg.models:
        src = ctx.artifact(f"{name}.onnx")
        tokenizer = load_tokenizer(str(src.tokenizer))
        pad = src.pad_id
        # Validation only: the test split is read once, by the benchmark.
        val_ids = encode(tokenizer, splits.validation.texts, ctx.max_length)
        val_labels = splits.validation.labels
        calib = encode(tokenizer, splits.train.texts[: cfg.calibration_examples], ctx.max_length)
        for mode in cfg.modes:
            folder = ctx.out / f"{name}.int8-{mode}"
            folder.mkdir(parents=True)
            dst = folder / "model.onnx"
            extra = {}
            with tempfile.TemporaryDirectory(prefix="edgekd-quant-") as tmp:
                method = cfg.calibration_method
                if mode == "static" and (cfg.compare_calibration or method == "auto"):
                    extra["calibration_comparison"] = compare_calibrations(src.path, Path(tmp), cfg.preset, calib,
                                                                           pad, val_ids, val_labels)
                    if method == "auto":
                        method = extra["calibration_picked"] = best_calibration(extra["calibration_comparison"])
                        log.info("%s static int8: picked %s calibration on validation", name, method)
                if mode == "static":
                    extra["calibration_method"] = method
                # Same folder per method as the comparison: its cached ranges are reused, not recomputed.
                graph, quantize = make_quantizer(src.path, Path(tmp) / method, mode, cfg.preset, method, calib, pad)
                if cfg.embedding_bits == 4:
                    quantize = with_block_embeddings(graph, quantize)
                if cfg.guard is None:
                    result = quantize(dst)
                    seconds = result.seconds
                else:
                    report = guarded_quantize(quantize, quantizable_nodes(graph, mode), src.path, dst, val_ids,
                                              val_labels, pad, cfg.guard)
                    extra["guard"] = dataclasses.asdict(report)
                    seconds = report.seconds
            # What the file holds, not what was asked: the guard may have kept the word table in float.
            bits = 4 if cfg.embedding_bits == 4 and has_int4_table(dst) else 8
            if bits == 4:
                extra["embedding_bits"] = 4
            tokenizer.save_pretrained(folder)  # each model file travels with its tokenizer
            metrics = {k: round(v, 6) for k, v in classification_metrics(
                onnx_predictions(dst, val_ids, pad), val_labels, n_classes).items()}
            ctx.metrics[f"{name}.int8-{mode}"] = {"seconds": round(seconds, 2), "file_bytes": folder_size(dst),
                                                 "source_bytes": folder_size(src.path), "validation": metrics,
                                                 **extra}
            log.info("%s int8 %s: %.1f MB (fp32 %.1f MB), validation accuracy %.4f", name, mode,
                     folder_size(dst) / 1e6, folder_size(src.path) / 1e6, metrics["accuracy"])
            ctx.add_output(f"{name}.int8-{mode}.onnx", "onnx", f"{name}.int8-{mode}/model.onnx", role=src.role,
                           source=name, precision=f"int8-{mode}", runtime="onnxruntime",
                           tokenizer=f"{name}.int8-{mode}", pad_id=pad, task=src.task, preset=cfg.preset,
                           validation_accuracy=metrics["accuracy"], embedding_bits=bits)
