"""Pipeline adapter: export each named model to ONNX and gate on parity with PyTorch."""

import logging

from edgekd.artifacts import folder_size
from edgekd.data.tokenize import encode
from edgekd.export.config import ExportConfig
from edgekd.export.core import check_parity, export_onnx, parity_inputs
from edgekd.models import load_classifier, load_tokenizer
from edgekd.stage_context import StageContext

log = logging.getLogger(__name__)


def run(cfg: ExportConfig, ctx: StageContext) -> None:
    if ctx.task.name == "causal-lm":
        from edgekd.export.lm_stage import run_causal_lm

        return run_causal_lm(cfg, ctx)
    texts = ctx.splits.test.texts[:64]
    for name in cfg.models:
        model_dir = ctx.artifact(name).path
        tokenizer = load_tokenizer(str(model_dir))
        # Eager attention exports to plain MatMul/Softmax, which ORT's transformer fusions recognise.
        model = load_classifier(str(model_dir), attn_implementation="eager")
        folder = ctx.out / name
        result = export_onnx(model, folder, cfg)
        # The whole tokenizer, not only tokenizer.json: its config carries the pad and special tokens, and
        # transformers 5 loads a bare tokenizer.json without a pad id (4.x refuses it).
        tokenizer.save_pretrained(folder)
        # Shapes longer than the pipeline's max_length cannot occur in use (and may exceed the position table).
        shapes = [(batch, min(length, ctx.max_length)) for batch, length in cfg.parity_shapes]
        inputs = parity_inputs(encode(tokenizer, texts, ctx.max_length), shapes, tokenizer.pad_token_id)
        parity = check_parity(model, result.path, inputs, cfg.parity_atol)
        log.info("exported %s with %s in %.1f s: max |logit diff| %.2e, argmax agreement %.3f", name, result.exporter,
                 result.seconds, parity["max_abs_diff"], parity["argmax_agreement"])
        ctx.metrics[name] = {"exporter": result.exporter, "fallback_reason": result.fallback_reason,
                             "seconds": round(result.seconds, 2), "parity": parity,
                             "file_bytes": folder_size(result.path)}
        src = ctx.artifact(name)
        ctx.add_output(f"{name}.onnx", "onnx", f"{name}/model.onnx", role=src.role, source=name, precision="fp32",
                       runtime="onnxruntime", tokenizer=name, pad_id=tokenizer.pad_token_id, task=src.task)
