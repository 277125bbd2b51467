"""LiteRT's format: the PyTorch student as ``model.tflite`` (litert-torch), fp32 or int8, run with XNNPACK.

litert-torch 0.10 has no dynamic shapes (its lowering goes through a JAX bridge that asserts on symbolic sizes), and
one fixed length of 128 cost 3.5x (fp32) / 4.4x (int8) latency on the MiniLM student's texts (median 27 tokens). So
one file holds one *signature per length bucket* (``len32``, ``len64``, ``len128``...), sharing the weights (+1.6 %
in size): a text runs in the smallest bucket that holds it, padded with the pad id and mask 0; masked keys add
exp(-1e4) = 0, so the logits equal the unpadded model's. The bench counts that padding in LiteRT's latency.

int8 is ai_edge_quantizer's dynamic recipe (int8 weights, activations quantised per call) applied to the fp32 file;
it quantises the embedding too. Inputs are int32 (``args_0`` = ids, ``args_1`` = mask); XNNPACK is LiteRT's default
CPU delegate (without it ~7x slower).
"""

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.errors import AssetError, DataError
from edgekd.mobile.graph import example_inputs, exportable, missing_library, padded

log = logging.getLogger(__name__)

MODEL_FILE = "model.tflite"
BUCKETS = (32, 64, 128)
PREFIX = "len"  # signature names: len32, len64, ...


@dataclass
class TfliteResult:
    path: Path  # <out_dir>/model.tflite
    seconds: float
    file_bytes: int
    buckets: list[int]
    extra_files: dict[str, Path] = field(default_factory=dict)

    @property
    def meta(self) -> dict:
        return {"delegate": "XNNPACK", "buckets": self.buckets, "max_length": self.buckets[-1]}


def require(convert: bool = True) -> None:
    """Raise the one-line ConfigError when LiteRT (the runtime; with ``convert`` also the converters) is missing."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401

        if convert:
            import ai_edge_quantizer  # noqa: F401
            import litert_torch  # noqa: F401
    except ImportError as exc:
        raise missing_library("the litert target", "litert", exc) from None


def bucket_lengths(max_length: int, buckets: Sequence[int] = BUCKETS) -> list[int]:
    """Buckets below ``max_length``, then ``max_length`` itself: (32, 64, 128) at 100 -> [32, 64, 100]."""
    return sorted({b for b in buckets if 2 <= b < max_length} | {max_length})


def _quantize(fp32: Path, out: Path) -> None:
    from ai_edge_quantizer import quantizer, recipe

    q = quantizer.Quantizer(str(fp32))
    q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    q.quantize().export_model(str(out), overwrite=True)


def export_tflite(model_dir: Path, out_dir: Path, precision: str, max_length: int,
                  buckets: Sequence[int] = BUCKETS) -> TfliteResult:
    """Write ``out_dir/model.tflite`` for the classifier in ``model_dir``: one signature per bucket length;
    ``precision`` "fp32" or "int8" (the fp32 conversion, then the dynamic int8 recipe).

    The file is loaded once before returning; a model that cannot be converted or loaded raises AssetError naming it.
    """
    require()
    import litert_torch
    import torch

    if precision not in ("fp32", "int8"):
        raise ValueError(f"precision {precision!r}: use fp32 or int8")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    lengths = bucket_lengths(max_length, buckets)
    start = time.perf_counter()
    model = exportable(model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MODEL_FILE
    with tempfile.TemporaryDirectory(prefix="edgekd-tflite-") as tmp:
        fp32 = path if precision == "fp32" else Path(tmp) / "fp32.tflite"
        try:
            converter = litert_torch
            for n in lengths:  # weights are shared between the signatures
                converter = converter.signature(f"{PREFIX}{n}", model, example_inputs(n))
            with torch.no_grad():
                converter.convert().export(str(fp32))
            if precision == "int8":
                _quantize(fp32, path)
        except Exception as exc:  # litert-torch / jax / the quantizer raise many types; one line names the model
            raise AssetError(f"{model_dir}: cannot convert to LiteRT ({precision}): "
                             f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}") from None
    try:
        found = TfliteModel(path, 0).buckets
    except Exception as exc:
        raise AssetError(f"{model_dir}: wrote {path}, which LiteRT cannot load: {exc}") from None
    if found != lengths:
        raise AssetError(f"{path}: signatures for lengths {found}, expected {lengths}")
    seconds = time.perf_counter() - start
    log.info("%s: %s .tflite %.2f MB in %.1f s, buckets %s", model_dir.name, precision, path.stat().st_size / 1e6,
             seconds, lengths)
    return TfliteResult(path, seconds, path.stat().st_size, lengths)


class TfliteModel:
    """A loaded bucketed .tflite: one text at a time, padded to the smallest bucket that holds it."""

    def __init__(self, path: Path, pad_id: int, threads: int = 1):
        require(convert=False)
        from ai_edge_litert.interpreter import Interpreter

        self.path, self.pad_id = Path(path), pad_id
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)  # XNNPACK applied by default
        signatures = self.interpreter.get_signature_list()  # {"len32": {"inputs": [...], "outputs": [...]}, ...}
        lengths = {int(k[len(PREFIX):]): k for k in signatures if k.startswith(PREFIX) and k[len(PREFIX):].isdigit()}
        if not lengths:
            raise AssetError(f"{path}: no length-bucket signatures ({PREFIX}N); found {sorted(signatures)}")
        self.buckets = sorted(lengths)
        self.runners = {n: self.interpreter.get_signature_runner(k) for n, k in lengths.items()}
        # args_0 = ids, args_1 = mask (positional order of the wrapper's forward)
        self.inputs = sorted(signatures[lengths[self.buckets[0]]]["inputs"])

    def __call__(self, ids) -> np.ndarray:
        """Logits [classes] of one text."""
        bucket = next((b for b in self.buckets if b >= len(ids)), None)
        if bucket is None:
            raise DataError(f"{self.path}: a text of {len(ids)} tokens is longer than its largest bucket "
                            f"({self.buckets[-1]})")
        x, m = padded(ids, bucket, self.pad_id, np.int32)
        out = self.runners[bucket](**{self.inputs[0]: x, self.inputs[1]: m})
        return next(iter(out.values()))[0].copy()


def tflite_logits(path: Path, ids: list[list[int]], pad_id: int, threads: int = 1) -> np.ndarray:
    """Logits [N, classes] of a .tflite file, batch 1, each text in its bucket, on ``threads`` threads."""
    model = TfliteModel(path, pad_id, threads)
    return np.stack([model(row) for row in ids]).astype(np.float32)
