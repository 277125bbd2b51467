"""Pipeline adapter for task causal-lm: ONNX with a KV cache for each named model, parity-gated on
validation windows (teacher-forced perplexity, top-1 agreement, cached decode steps)."""

import logging

from edgekd.artifacts import folder_size
from edgekd.export.causal_lm import export_causal_lm, lm_parity
from edgekd.export.config import ExportConfig, ExportLMConfig
from edgekd.stage_context import StageContext
from edgekd.tasks.causal_lm import load_causal_lm

log = logging.getLogger(__name__)


def run_causal_lm(cfg: ExportConfig, ctx: StageContext) -> None:
    for name in cfg.models:
        src = ctx.artifact(name)
        model, tokenizer = load_causal_lm(str(src.path))
        folder = ctx.out / name
        path = export_causal_lm(src.path, folder, cfg.opset)
        tokenizer.save_pretrained(folder)  # the generation bundle and the bench read it from here
        windows = ctx.task.validation_windows(tokenizer, ctx.splits, ctx.max_length)[: (cfg.lm or ExportLMConfig()).parity_windows]
        parity = lm_parity(model, path, windows)
        ctx.metrics[name] = {"exporter": "optimum", "parity": parity, "file_bytes": folder_size(path)}
        ctx.add_output(f"{name}.onnx", "onnx", f"{name}/model.onnx", role=src.role, source=name, precision="fp32",
                       runtime="onnxruntime", tokenizer=name, pad_id=tokenizer.pad_token_id, task=src.task,
                       kv_cache=True)
