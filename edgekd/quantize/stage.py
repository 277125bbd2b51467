"""Pipeline adapter: int8 versions of each exported model, with their validation accuracy."""

import logging

from edgekd.artifacts import folder_size
from edgekd.data.tokenize import encode
from edgekd.metrics import classification_metrics
from edgekd.models import load_tokenizer
from edgekd.quantize.config import QuantizeConfig
from edgekd.quantize.core import calibration_batches, onnx_predictions, quantize_dynamic_int8, quantize_static_int8
from edgekd.stage_context import StageContext

log = logging.getLogger(__name__)


def run(cfg: QuantizeConfig, ctx: StageContext) -> None:
    splits = ctx.splits
    n_classes = len(splits.label_names)
    for name in cfg.models:
        src = ctx.artifact(f"{name}.onnx")
        tokenizer = load_tokenizer(str(src.tokenizer))
        pad = src.pad_id
        # Validation only: the test split is read once, by the benchmark.
        val_ids = encode(tokenizer, splits.validation.texts, ctx.max_length)
        for mode in cfg.modes:
            folder = ctx.out / f"{name}.int8-{mode}"
            folder.mkdir(parents=True)
            dst = folder / "model.onnx"
            if mode == "dynamic":
                result = quantize_dynamic_int8(src.path, dst, cfg.preset)
            else:
                calib = encode(tokenizer, splits.train.texts[: cfg.calibration_examples], ctx.max_length)
                result = quantize_static_int8(src.path, dst, cfg.preset, cfg.calibration_method,
                                              calibration_batches(calib, pad))
            tokenizer.save_pretrained(folder)  # each model file travels with its tokenizer
            metrics = {k: round(v, 6) for k, v in classification_metrics(
                onnx_predictions(dst, val_ids, pad), splits.validation.labels, n_classes).items()}
            ctx.metrics[f"{name}.int8-{mode}"] = {"seconds": round(result.seconds, 2), "file_bytes": folder_size(dst),
                                                 "source_bytes": folder_size(src.path), "validation": metrics}
            log.info("%s int8 %s: %.1f MB (fp32 %.1f MB), validation accuracy %.4f", name, mode,
                     folder_size(dst) / 1e6, folder_size(src.path) / 1e6, metrics["accuracy"])
            ctx.add_output(f"{name}.int8-{mode}.onnx", "onnx", f"{name}.int8-{mode}/model.onnx", role=src.role,
                           source=name, precision=f"int8-{mode}", runtime="onnxruntime",
                           tokenizer=f"{name}.int8-{mode}", pad_id=pad, task=src.task, preset=cfg.preset,
                           validation_accuracy=metrics["accuracy"])
