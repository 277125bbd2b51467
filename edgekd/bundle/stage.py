"""Pipeline adapter: assemble the deployable bundle (model.onnx, tokenizer.json, labels, manifest), plus the phone
runtimes' files the run's mobile stage made and gated: model.ort with its required_operators.config (ONNX Runtime
Mobile: this very ONNX model), and model.tflite (LiteRT) and model.pte (ExecuTorch) of the same precision family,
converted from the PyTorch model it was exported from by their own quantizers (so their int8 predictions can differ
from model.onnx's). deploy/edgekd_runtime.py runs any of them."""

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
    mobile = _add_mobile_siblings(ctx, src, folder)
    manifest.update(mobile)
    atomic_write_json(folder / "bundle.json", manifest)
    make_world_readable(folder)
    mobile_bytes = {f"{runtime}_bytes": sum(folder_size(folder / entry[k]) for k in FILE_KEYS if k in entry)
                    for runtime, entry in mobile.items()}
    ctx.metrics.update(source=cfg.model, bundle_bytes=folder_size(folder), **mobile_bytes)
    ctx.add_output("bundle", "bundle", "bundle", role=src.role, source=cfg.model, precision=src.precision,
                   runtime="bundle", tokenizer="bundle", pad_id=src.pad_id, task=src.task,
                   mobile_bytes=sum(mobile_bytes.values()), targets=sorted(mobile))


FILE_KEYS = ("model", "required_operators")  # the files of a mobile entry in bundle.json
# The runtime key in bundle.json and the file name of each mobile artifact type, and how deploy/edgekd_runtime.py
# runs it (written into the manifest for whoever reads it without that file).
MOBILE_FILES = {
    "ort": ("ort", "model.ort", "onnxruntime (a mobile or reduced-operator build takes required_operators.config)"),
    "tflite": ("litert", "model.tflite", "ai-edge-litert Interpreter, XNNPACK; one signature per length bucket "
               "(len<N>), inputs ids and attention mask int32 [1, N] padded with pad_id"),
    "pte": ("executorch", "model.pte", "executorch.runtime, XNNPACK delegate (its Python runtime needs torch); "
            "inputs ids and attention mask int64 [1, length], length 2 to max_length"),
}


def _mobile_siblings(ctx: StageContext, src) -> list:
    """The gated phone-runtime files of the bundled model: its .ort (converted from this very ONNX file), and the
    .tflite / .pte of the same precision family made from the PyTorch model it was exported from."""
    family = "fp32" if (src.precision or "fp32") == "fp32" else "int8"
    found = []
    for a in ctx.artifacts.values():
        if a.type == "ort" and a.source == src.name:
            found.append(a)
        elif a.type in ("tflite", "pte") and a.source == src.source and (a.precision or "fp32").startswith(family):
            found.append(a)
    return found


def _add_mobile_siblings(ctx: StageContext, src, folder) -> dict[str, dict]:
    """Copy each sibling (and .ort's required_operators.config) into the bundle; their bundle.json entries by
    runtime key (ort, litert, executorch)."""
    entries = {}
    for a in _mobile_siblings(ctx, src):
        key, name, how = MOBILE_FILES[a.type]
        shutil.copyfile(a.path, folder / name)
        entry = {"model": name, "model_sha256": sha256_of(folder / name), "source_artifact": a.name,
                 "precision": a.precision, "runtime": how}
        if a.type == "ort":
            shutil.copyfile(a.path.parent / a.meta["required_operators"], folder / "required_operators.config")
            entry["required_operators"] = "required_operators.config"
        entries[key] = entry
    return entries


def make_world_readable(folder) -> None:
    """The bundle is meant to be copied and served: mkstemp (atomic writes) leaves 0600, copies follow the umask."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)
