"""Pipeline adapter: each ONNX student (fp32 and int8) as phone-runtime files, each gated on validation parity.

A file is declared as an output only when its argmax agrees often enough on the validation split (the test split is
the benchmark's) with the model it was converted from (``gate_against: source``, the default) or with the PyTorch
model it descends from (``pytorch``); agreement with both is recorded. A file that cannot be converted or fails the gate
is recorded in the metrics with ``"gate": "failed: ..."``, deleted, and the other files go on.
"""

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.artifacts import Artifact, folder_size
from edgekd.data.tokenize import encode
from edgekd.errors import AssetError, ConfigError
from edgekd.metrics import accuracy
from edgekd.mobile.config import MobileConfig, mobile_artifact
from edgekd.mobile.core import parity_gate
from edgekd.mobile.ort import convert_to_ort, ort_file_logits
from edgekd.models import load_tokenizer
from edgekd.ort import make_session, ort_logits
from edgekd.stage_context import StageContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MobileTarget:
    """One phone runtime: how to write its file from an ONNX graph, and how to run that file on this machine."""

    convert: Callable  # (onnx_path, out_dir) -> result with .path, .seconds, .file_bytes, .extra_files
    logits: Callable[[Path, list[list[int]], int], np.ndarray]  # (file, token ids, pad id) -> [N, classes]
    type: str  # artifact type: the bench picks its runner from it, never from the name
    runtime: str


# One entry per MobileTargetName (edgekd/mobile/config.py).
TARGETS: dict[str, MobileTarget] = {
    "ort": MobileTarget(convert_to_ort, ort_file_logits, type="ort", runtime="onnxruntime"),
}


def sources(cfg: MobileConfig, artifacts: dict[str, Artifact]) -> list[str]:
    """The ONNX artifacts to convert: those named, else every ONNX artifact of role student."""
    names = cfg.models if cfg.models is not None else [n for n, a in artifacts.items()
                                                         if a.type == "onnx" and a.role == "student"]
    if not names:
        onnx = [n for n, a in artifacts.items() if a.type == "onnx"]
        raise ConfigError(f"mobile: no ONNX artifact of role student to convert; name them in mobile.models "
                          f"(ONNX artifacts of this run: {', '.join(onnx) or 'none'})")
    for name in names:
        if artifacts[name].type != "onnx":
            raise ConfigError(f"mobile.models: {name!r} is a {artifacts[name].type} artifact; only onnx ones convert")
    return names


def _pytorch_model(src: Artifact, artifacts: dict[str, Artifact]) -> Artifact:
    ref = artifacts.get(src.source)
    if ref is None or ref.type != "hf-model":
        raise ConfigError(f"mobile: {src.name} was made from {src.source!r}, which is not a PyTorch model (hf-model) "
                          "of this run; the parity gate compares with it")
    return ref


def _pytorch_logits(model_dir: Path, ids: list[list[int]], pad_id: int) -> np.ndarray:
    import torch

    from edgekd.models import load_classifier
    from edgekd.train import predict_logits

    return predict_logits(load_classifier(str(model_dir)), ids, pad_id, torch.device("cpu"))


def _ship_tokenizer(ref: Artifact, tokenizer, folder: Path) -> None:
    """The tokenizer beside the file (as for every ONNX artifact), and the PyTorch model's config.json: its id2label
    and position-table size let `edgekd bench model.ort` score accuracy and cap its input lengths."""
    tokenizer.save_pretrained(folder)
    config = ref.path / "config.json"
    if config.is_file():
        shutil.copyfile(config, folder / "config.json")


def run(cfg: MobileConfig, ctx: StageContext) -> None:
    splits = ctx.splits
    names = sources(cfg, ctx.artifacts)
    encoded: dict[Path, list[list[int]]] = {}  # validation ids per tokenizer folder
    references: dict[tuple[str, Path], np.ndarray] = {}  # PyTorch logits per (hf-model, tokenizer)
    for name in names:
        src = ctx.artifact(name)
        ref = _pytorch_model(src, ctx.artifacts)
        tokenizer = load_tokenizer(str(src.tokenizer))
        if src.tokenizer not in encoded:  # validation only: the test split is read once, by the benchmark
            encoded[src.tokenizer] = encode(tokenizer, splits.validation.texts, ctx.max_length)
        ids = encoded[src.tokenizer]
        if (ref.name, src.tokenizer) not in references:
            references[(ref.name, src.tokenizer)] = _pytorch_logits(ref.path, ids, src.pad_id)
        pytorch = references[(ref.name, src.tokenizer)]
        source = ort_logits(make_session(src.path), ids, src.pad_id)
        precision = src.precision or "fp32"
        min_agreement = cfg.min_agreement_fp32 if precision == "fp32" else cfg.min_agreement_int8
        for target_name in cfg.targets:
            target, out_name = TARGETS[target_name], mobile_artifact(name, target_name)
            folder = ctx.out / out_name
            entry = {"source": name, "pytorch": ref.name, "target": target_name, "precision": precision,
                     "source_bytes": folder_size(src.path)}
            try:
                result = target.convert(src.path, folder)
            except AssetError as exc:
                shutil.rmtree(folder, ignore_errors=True)
                ctx.metrics[out_name] = {**entry, "gate": f"failed: {exc}"}
                log.warning("%s: not written: %s", out_name, exc)
                continue
            logits = target.logits(result.path, ids, src.pad_id)
            report = parity_gate(logits, source, pytorch, min_agreement, cfg.gate_against)
            ctx.metrics[out_name] = entry = {**entry, "seconds": round(result.seconds, 2),
                                             "file_bytes": result.file_bytes, **report}
            if report["gate"] != "passed":
                log.warning("%s: left out, parity gate %s", out_name, report["gate"])
                shutil.rmtree(folder)  # nothing undeclared stays in the run to be shipped by mistake
                continue
            entry["validation_accuracy"] = round(accuracy(logits.argmax(-1), np.asarray(splits.validation.labels)), 6)
            log.info("%s: %.2f MB (.onnx %.2f MB), agreement with PyTorch %.4f, max |Δlogit| %.1e vs .onnx, "
                     "%.1e vs PyTorch", out_name, result.file_bytes / 1e6, entry["source_bytes"] / 1e6,
                     report["agreement_vs_pytorch"], report["max_abs_diff_vs_onnx"], report["max_abs_diff_vs_pytorch"])
            _ship_tokenizer(ref, tokenizer, folder)
            # Extra files are named relative to the model file's folder (required_operators.config sits beside it).
            extra = {key: str(path.relative_to(result.path.parent)) for key, path in result.extra_files.items()}
            ctx.add_output(out_name, target.type, f"{out_name}/{result.path.name}", role=src.role, source=name,
                           precision=precision, runtime=target.runtime, tokenizer=out_name, pad_id=src.pad_id,
                           task=src.task, **extra, agreement_vs_pytorch=report["agreement_vs_pytorch"],
                           max_abs_diff_vs_onnx=report["max_abs_diff_vs_onnx"],
                           max_abs_diff_vs_pytorch=report["max_abs_diff_vs_pytorch"],
                           validation_accuracy=entry["validation_accuracy"])
    if not any(a.type in {t.type for t in TARGETS.values()} for a in ctx.outputs.values()):
        log.warning("mobile: no file passed its parity gate; see this stage's metrics")
