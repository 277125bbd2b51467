"""Pipeline adapter: assemble the deployable bundle (model.onnx, tokenizer.json, labels, manifest), plus
model.ort and required_operators.config where the run converted the bundled model for ONNX Runtime Mobile."""

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
    mobile = _add_ort_sibling(ctx, cfg.model, folder)
    if mobile:
        manifest["ort"] = mobile
    atomic_write_json(folder / "bundle.json", manifest)
    make_world_readable(folder)
    mobile_bytes = sum(folder_size(folder / mobile[k]) for k in ("model", "required_operators")) if mobile else 0
    ctx.metrics.update(source=cfg.model, bundle_bytes=folder_size(folder),
                       **({"ort_bytes": mobile_bytes} if mobile else {}))
    ctx.add_output("bundle", "bundle", "bundle", role=src.role, source=cfg.model, precision=src.precision,
                   runtime="bundle", tokenizer="bundle", pad_id=src.pad_id, task=src.task,
                   **({"mobile_bytes": mobile_bytes} if mobile else {}))


def _add_ort_sibling(ctx: StageContext, model: str, folder) -> dict | None:
    """Copy the bundled model's ONNX Runtime Mobile file (a mobile stage output that passed its parity gate) and its
    required_operators.config into the bundle; their manifest entry, or None when the run has no such file."""
    ort = next((a for a in ctx.artifacts.values() if a.type == "ort" and a.source == model), None)
    if ort is None:
        return None
    shutil.copyfile(ort.path, folder / "model.ort")
    shutil.copyfile(ort.path.parent / ort.meta["required_operators"], folder / "required_operators.config")
    return {"model": "model.ort", "required_operators": "required_operators.config",
            "model_sha256": sha256_of(folder / "model.ort"), "source_artifact": ort.name}


def make_world_readable(folder) -> None:
    """The bundle is meant to be copied and served: mkstemp (atomic writes) leaves 0600, copies follow the umask."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)
