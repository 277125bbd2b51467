"""Pipeline adapter: assemble the deployable bundle (model.onnx, tokenizer.json, labels, manifest)."""

import json
import shutil

from edgekd.artifacts import atomic_write_json, folder_size
from edgekd.assets.wheel import sha256_of
from edgekd.bundle.config import BundleConfig
from edgekd.stage_context import StageContext
from edgekd.version import __version__


def run(cfg: BundleConfig, ctx: StageContext) -> None:
    if ctx.task.name == "causal-lm":
        from edgekd.bundle.lm_stage import run_causal_lm

        return run_causal_lm(cfg, ctx)
    src = ctx.artifact(cfg.model)
    folder = ctx.out / "bundle"
    folder.mkdir()
    shutil.copyfile(src.path, folder / "model.onnx")
    shutil.copyfile(src.tokenizer / "tokenizer.json", folder / "tokenizer.json")
    (folder / "labels.json").write_text(json.dumps(ctx.splits.label_names, indent=1))
    manifest = {
        "format": "edgekd-bundle", "version": 1, "edgekd": __version__, "model": "model.onnx",
        "tokenizer": "tokenizer.json", "labels": "labels.json", "max_length": ctx.max_length,
        "source_artifact": cfg.model, "precision": src.precision, "pad_id": src.pad_id,
        "model_sha256": sha256_of(folder / "model.onnx"),
        "runtime": "onnxruntime (CPUExecutionProvider); inputs input_ids, attention_mask[, token_type_ids] int64",
    }
    atomic_write_json(folder / "bundle.json", manifest)
    make_world_readable(folder)
    ctx.metrics.update(source=cfg.model, bundle_bytes=folder_size(folder))
    ctx.add_output("bundle", "bundle", "bundle", role=src.role, source=cfg.model, precision=src.precision,
                   runtime="bundle", tokenizer="bundle", pad_id=src.pad_id, task=src.task)


def make_world_readable(folder) -> None:
    """The bundle is meant to be copied and served: mkstemp (atomic writes) leaves 0600, copies follow the umask."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)
