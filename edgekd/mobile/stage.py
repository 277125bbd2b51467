"""Pipeline adapter: each ONNX student (fp32 and int8) as phone-runtime files, each gated on validation parity.

A file is declared as an output only when its argmax agrees often enough on the validation split (the test split is
the benchmark's) with the model it was converted from (``gate_against: source``, the default) or with the PyTorch
model it descends from (``pytorch``); agreement with both is recorded. A file that cannot be converted or fails the gate
is recorded in the metrics with ``"gate": "failed: ..."``, deleted, and the other files go on.

Targets with ``source="pytorch"`` (ExecuTorch, LiteRT) convert the PyTorch model itself, once per precision, and are
gated against it; one whose library is not installed is skipped with a warning naming the extra to install.
ExecuTorch's int8 preparation runs the first training texts through its observers (deterministic: no seed in the
cache key); with dynamic activations only the weights' ranges matter. LiteRT's dynamic int8 needs no texts.
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
from edgekd.mobile import executorch, litert
from edgekd.mobile.config import MobileConfig, mobile_artifact, pytorch_artifact
from edgekd.mobile.core import parity_gate
from edgekd.mobile.ort import convert_to_ort, ort_file_logits
from edgekd.models import load_tokenizer
from edgekd.ort import make_session, ort_logits
from edgekd.stage_context import StageContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MobileTarget:
    """One phone runtime: how to write its file (from an ONNX graph or the PyTorch model), how to run it here."""

    # source "onnx": (onnx_path, out_dir); "pytorch": (model_dir, out_dir, precision, calib_ids, max_length, pad_id);
    # either returns a result with .path, .seconds, .file_bytes, .extra_files (and optionally .meta)
    convert: Callable
    logits: Callable[[Path, list[list[int]], int], np.ndarray]  # (file, token ids, pad id) -> [N, classes]
    type: str  # artifact type (and the file suffix of pytorch targets): the bench picks its runner from it
    runtime: str
    source: str = "onnx"  # "onnx" | "pytorch" (edgekd.mobile.config.PYTORCH_TARGETS)
    precisions: tuple[str, ...] = ()  # pytorch targets: one file per precision
    require: Callable[[], None] | None = None  # raises the one-line ConfigError when its library is missing


def _to_pte(model_dir, out_dir, precision, calib_ids, max_length, pad_id):
    return executorch.export_pte(model_dir, out_dir, precision, calib_ids, max_length, pad_id=pad_id)


def _to_tflite(model_dir, out_dir, precision, calib_ids, max_length, pad_id):
    return litert.export_tflite(model_dir, out_dir, precision, max_length)  # dynamic int8: no calibration


# One entry per MobileTargetName (edgekd/mobile/config.py).
TARGETS: dict[str, MobileTarget] = {
    "ort": MobileTarget(convert_to_ort, ort_file_logits, type="ort", runtime="onnxruntime"),
    "executorch": MobileTarget(_to_pte, executorch.pte_logits, type="pte", runtime="executorch", source="pytorch",
                               precisions=("fp32", "int8"), require=executorch.require),
    "litert": MobileTarget(_to_tflite, litert.tflite_logits, type="tflite", runtime="litert", source="pytorch",
                           precisions=("fp32", "int8"), require=litert.require),
}
PRECISION_NAMES = {"fp32": "fp32", "int8": "int8-dynamic"}  # the artifact's precision field (int8: dynamic activations)
CALIBRATION_TEXTS = 32


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


def pytorch_sources(cfg: MobileConfig, artifacts: dict[str, Artifact]) -> list[str]:
    """The PyTorch models that pytorch targets convert: those the ONNX students (or ``models``) were exported from,
    else (no ONNX student in the run) the newest PyTorch student."""
    onnx = cfg.models if cfg.models is not None else [n for n, a in artifacts.items()
                                                        if a.type == "onnx" and a.role == "student"]
    names = list(dict.fromkeys(_pytorch_model(artifacts[n], artifacts).name for n in onnx))
    if not names and cfg.models is None:
        names = [n for n, a in artifacts.items() if a.type == "hf-model" and a.role == "student"][-1:]
    if not names:
        raise ConfigError("mobile: no PyTorch student (hf-model of role student) for the executorch / litert targets")
    return names


def _convert_and_run(ctx: StageContext, out_name: str, entry: dict, folder: Path, convert: Callable,
                     logits: Callable[[Path], np.ndarray]) -> tuple[object, np.ndarray] | None:
    """(result, validation logits [N, classes]) of a freshly converted file; None when it cannot be converted or does
    not run: that file is recorded as failed and deleted, and the caller goes on with the others."""
    try:
        result = convert()
    except AssetError as exc:
        why = f"failed: {exc}"
    else:
        try:
            return result, logits(result.path)
        except Exception as exc:  # converts but does not run: left out like a file failing its gate
            why = f"failed: does not run: {str(exc).strip().splitlines()[0][:300]}"
    shutil.rmtree(folder, ignore_errors=True)
    ctx.metrics[out_name] = {**entry, "gate": why}
    log.warning("%s: left out: %s", out_name, why)
    return None


def _declare(ctx: StageContext, out_name: str, entry: dict, target: MobileTarget, result, logits: np.ndarray,
             report: dict, ref: Artifact, tokenizer, **fields) -> None:
    """Record the gate; declare the file with its tokenizer and config.json if it passed, else delete it."""
    meta = getattr(result, "meta", {})
    ctx.metrics[out_name] = entry = {**entry, "seconds": round(result.seconds, 2), "file_bytes": result.file_bytes,
                                     **meta, **report}
    if report["gate"] != "passed":
        log.warning("%s: left out, parity gate %s", out_name, report["gate"])
        shutil.rmtree(result.path.parent)  # nothing undeclared stays in the run to be shipped by mistake
        return
    entry["validation_accuracy"] = round(accuracy(logits.argmax(-1), np.asarray(ctx.splits.validation.labels)), 6)
    log.info("%s: %.2f MB (from %.2f MB), agreement with PyTorch %.4f, max |Δlogit| %.1e vs PyTorch", out_name,
             result.file_bytes / 1e6, entry["source_bytes"] / 1e6, report["agreement_vs_pytorch"],
             report["max_abs_diff_vs_pytorch"])
    _ship_tokenizer(ref, tokenizer, result.path.parent)
    # Extra files are named relative to the model file's folder (required_operators.config sits beside it).
    extra = {key: str(path.relative_to(result.path.parent)) for key, path in result.extra_files.items()}
    parity = {k: report[k] for k in ("agreement_vs_pytorch", "max_abs_diff_vs_onnx", "max_abs_diff_vs_pytorch")
              if k in report}
    ctx.add_output(out_name, target.type, f"{out_name}/{result.path.name}", precision=entry["precision"],
                   runtime=target.runtime, tokenizer=out_name, **fields, **extra, **meta, **parity,
                   validation_accuracy=entry["validation_accuracy"])


def run(cfg: MobileConfig, ctx: StageContext) -> None:
    splits = ctx.splits
    from_onnx = [t for t in cfg.targets if TARGETS[t].source == "onnx"]
    from_pytorch = [t for t in cfg.targets if TARGETS[t].source == "pytorch"]
    for name in list(from_pytorch):  # a target whose library is missing is skipped, named with its extra
        try:
            TARGETS[name].require()
        except ConfigError as exc:
            log.warning("mobile: target %s skipped: %s", name, exc)
            ctx.metrics[name] = {"target": name, "gate": f"skipped: {exc}"}
            from_pytorch.remove(name)
    encoded: dict[Path, list[list[int]]] = {}  # validation ids per tokenizer folder
    references: dict[tuple[str, Path], np.ndarray] = {}  # PyTorch logits per (hf-model, tokenizer)

    def validation(ref: Artifact, tokenizer_dir: Path, tokenizer, pad_id: int) -> tuple[list[list[int]], np.ndarray]:
        if tokenizer_dir not in encoded:  # validation only: the test split is read once, by the benchmark
            encoded[tokenizer_dir] = encode(tokenizer, splits.validation.texts, ctx.max_length)
        ids = encoded[tokenizer_dir]
        if (ref.name, tokenizer_dir) not in references:
            references[(ref.name, tokenizer_dir)] = _pytorch_logits(ref.path, ids, pad_id)
        return ids, references[(ref.name, tokenizer_dir)]

    for name in sources(cfg, ctx.artifacts) if from_onnx else []:
        src = ctx.artifact(name)
        ref = _pytorch_model(src, ctx.artifacts)
        tokenizer = load_tokenizer(str(src.tokenizer))
        ids, pytorch = validation(ref, src.tokenizer, tokenizer, src.pad_id)
        source = ort_logits(make_session(src.path), ids, src.pad_id)
        precision = src.precision or "fp32"
        min_agreement = cfg.min_agreement_fp32 if precision == "fp32" else cfg.min_agreement_int8
        for target_name in from_onnx:
            target, out_name = TARGETS[target_name], mobile_artifact(name, target_name)
            folder = ctx.out / out_name
            entry = {"source": name, "pytorch": ref.name, "target": target_name, "precision": precision,
                     "source_bytes": folder_size(src.path)}
            made = _convert_and_run(ctx, out_name, entry, folder, lambda: target.convert(src.path, folder),
                                    lambda path: target.logits(path, ids, src.pad_id))
            if made is None:
                continue
            result, logits = made
            report = parity_gate(logits, source, pytorch, min_agreement, cfg.gate_against)
            _declare(ctx, out_name, entry, target, result, logits, report, ref, tokenizer, role=src.role,
                     source=name, pad_id=src.pad_id, task=src.task)

    for ref_name in pytorch_sources(cfg, ctx.artifacts) if from_pytorch else []:
        ref = ctx.artifact(ref_name)
        tokenizer = load_tokenizer(str(ref.tokenizer or ref.path))
        pad_id = ref.pad_id if ref.pad_id is not None else tokenizer.pad_token_id
        ids, pytorch = validation(ref, ref.tokenizer or ref.path, tokenizer, pad_id)
        calib = encode(tokenizer, list(splits.train.texts[:CALIBRATION_TEXTS]), ctx.max_length)
        for target_name in from_pytorch:
            target = TARGETS[target_name]
            for precision in target.precisions:
                out_name = pytorch_artifact(ref_name, target.type, precision)
                folder = ctx.out / out_name
                entry = {"source": ref_name, "pytorch": ref_name, "target": target_name,
                         "precision": PRECISION_NAMES[precision],
                         "source_bytes": folder_size(ref.path / "model.safetensors")}
                made = _convert_and_run(
                    ctx, out_name, entry, folder,
                    lambda: target.convert(ref.path, folder, precision, calib, ctx.max_length, pad_id),
                    lambda path: target.logits(path, ids, pad_id))
                if made is None:
                    continue
                result, logits = made
                min_agreement = cfg.min_agreement_fp32 if precision == "fp32" else cfg.min_agreement_int8
                # its source is the PyTorch model: the ONNX columns of the report would repeat the PyTorch ones
                report = {k: v for k, v in parity_gate(logits, pytorch, pytorch, min_agreement, "pytorch").items()
                          if not k.endswith("_vs_onnx")}
                _declare(ctx, out_name, entry, target, result, logits, report, ref, tokenizer, role=ref.role,
                         source=ref_name, pad_id=pad_id, task=ref.task)
    if not any(a.type in {t.type for t in TARGETS.values()} for a in ctx.outputs.values()):
        log.warning("mobile: no file passed its parity gate; see this stage's metrics")
