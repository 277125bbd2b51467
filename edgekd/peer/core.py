"""The peer path, as a user without edgekd would take it with optimum:

    optimum export (main_export, task text-classification)  ->  fp32 model.onnx
    ORTOptimizer + OptimizationConfig(optimization_level)     ->  fused fp32 graph (Attention, SkipLayerNorm...)
    ORTQuantizer + AutoQuantizationConfig.<preset>(is_static=False, per_channel)  ->  dynamic int8 model.onnx

ONNX Runtime's quantizer cannot type the outputs of the fused com.microsoft ops (ONNX shape inference
does not know them) and stops with "Unable to find data type ... You may use extra_options
`DefaultTensorType`". ORTQuantizer builds the quantizer's extra_options itself and takes none from the
caller (optimum-onnx 0.1), so the fix a user applies is to add that one option to the quantizer it
builds. The stock call is tried first, so the result records whether the fix was needed.
"""

import importlib.util
import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from edgekd.artifacts import folder_size
from edgekd.errors import EdgekdError
from edgekd.peer.config import PeerConfig

log = logging.getLogger(__name__)

INSTALL_HINT = ("pip install optimum==2.1.0 optimum-onnx==0.1.0 (optimum-onnx needs transformers<4.58), "
                "or remove the peer stage")
DEFAULT_TENSOR_TYPE_FIX = "DefaultTensorType=FLOAT added to ORTQuantizer's extra_options"
_UNTYPED_TENSOR = "DefaultTensorType"  # the quantizer names the option in its error message


@dataclass
class PeerResult:
    path: Path  # the dynamic int8 model.onnx
    exported_bytes: int  # optimum's fp32 export
    optimized_bytes: int  # fp32 after ORTOptimizer
    file_bytes: int  # the int8 file
    fused_operators: dict[str, int]  # e.g. {"Attention": 6, "SkipLayerNormalization": 12}
    fix: str | None  # None: the stock ORTQuantizer call worked
    fix_reason: str | None  # the stock call's error, first line
    seconds: dict[str, float] = field(default_factory=dict)  # export / optimize / quantize


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent package (optimum) is missing
        return False


def require_optimum() -> None:
    """Raise a one-line error before any work when optimum's exporter or ONNX Runtime tools are missing.

    optimum 2.x alone has neither: both ship in optimum-onnx, which does not install on transformers 5.
    """
    missing = [name for name in ("optimum.exporters.onnx", "optimum.onnxruntime") if not _has_module(name)]
    if missing:
        raise EdgekdError(f"the peer stage needs optimum-onnx ({' and '.join(missing)} not importable): "
                          f"{INSTALL_HINT}")


def check_stock_layout(model_dir: Path, name: str) -> None:
    """optimum loads the model with stock from_pretrained: a pruned or factorised layout would fail to
    load, or load with freshly initialised layers. The peer path is the teacher's, as a user has it."""
    import json

    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    odd = [key for key in ("edgekd_layout", "edgekd_low_rank") if config.get(key)]
    if odd:
        raise EdgekdError(f"peer.model: {name!r} has an edgekd-specific layout ({', '.join(odd)} in its config.json) "
                          "that optimum cannot load; the peer path starts from the unpruned teacher (model: teacher)")


@contextmanager
def default_tensor_type_float():
    """Make ORTQuantizer pass DefaultTensorType=FLOAT to ONNX Runtime's quantizer, for one call.

    ORTQuantizer.quantize() calls the ONNXQuantizer class it imported, with an extra_options dict it
    fills itself; the class is wrapped so that dict gains one key. Dynamic quantization only (static
    would go through QDQQuantizer, which the peer path does not use).
    """
    import onnx
    from optimum.onnxruntime import quantization as ort_quantization

    original = getattr(ort_quantization, "ONNXQuantizer", None)
    if original is None:
        raise EdgekdError("optimum.onnxruntime.quantization has no ONNXQuantizer to pass DefaultTensorType to; "
                          "this optimum version needs another way to set ONNX Runtime's extra_options")

    def with_default_type(*args, extra_options=None, **kwargs):
        options = {**(extra_options or {}), "DefaultTensorType": onnx.TensorProto.FLOAT}
        return original(*args, extra_options=options, **kwargs)

    ort_quantization.ONNXQuantizer = with_default_type
    try:
        yield
    finally:
        ort_quantization.ONNXQuantizer = original


def _quantize(onnx_dir: Path, out_dir: Path, cfg: PeerConfig) -> tuple[str | None, str | None]:
    """ORTQuantizer on ``onnx_dir``/model.onnx into ``out_dir``/model.onnx; returns (fix, reason)."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    def run() -> None:
        qconfig = getattr(AutoQuantizationConfig, cfg.preset)(is_static=False, per_channel=cfg.per_channel)
        ORTQuantizer.from_pretrained(onnx_dir, file_name="model.onnx").quantize(qconfig, out_dir, file_suffix=None)

    try:
        run()
        return None, None
    except RuntimeError as exc:
        if _UNTYPED_TENSOR not in str(exc):
            raise
        reason = str(exc).splitlines()[0]
    log.warning("ORTQuantizer failed on the optimised graph (%s); retrying with DefaultTensorType=FLOAT", reason)
    with default_tensor_type_float():
        run()
    return DEFAULT_TENSOR_TYPE_FIX, reason


def peer_quantize(model_dir: Path, out_dir: Path, cfg: PeerConfig) -> PeerResult:
    """Export ``model_dir`` (a Hugging Face classifier folder) with optimum, optimise it with
    ORTOptimizer and quantize it with ORTQuantizer into ``out_dir``/model.onnx.

    ``out_dir`` also receives what ORTQuantizer writes beside the model (config.json, ort_config.json,
    the tokenizer files): a folder a user could load with ORTModelForSequenceClassification.
    """
    require_optimum()
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="edgekd-peer-") as tmp:
        exported, optimized = Path(tmp) / "exported", Path(tmp) / "optimized"
        start = time.perf_counter()
        # Validation against PyTorch is skipped: the peer is judged by its accuracy, measured by the caller.
        main_export(str(model_dir), exported, task="text-classification", do_validation=False)
        seconds["export"] = time.perf_counter() - start

        start = time.perf_counter()
        optimizer = ORTOptimizer.from_pretrained(exported, file_names=["model.onnx"])
        optimizer.optimize(OptimizationConfig(optimization_level=cfg.optimization_level), optimized, file_suffix=None)
        seconds["optimize"] = time.perf_counter() - start
        fused = ORTOptimizer.get_fused_operators(optimized / "model.onnx")

        start = time.perf_counter()
        out_dir.mkdir(parents=True, exist_ok=True)
        fix, reason = _quantize(optimized, out_dir, cfg)
        seconds["quantize"] = time.perf_counter() - start
        result = PeerResult(path=out_dir / "model.onnx", exported_bytes=folder_size(exported / "model.onnx"),
                            optimized_bytes=folder_size(optimized / "model.onnx"),
                            file_bytes=folder_size(out_dir / "model.onnx"), fused_operators=dict(fused),
                            fix=fix, fix_reason=reason, seconds={k: round(v, 2) for k, v in seconds.items()})
    log.info("peer path: fp32 %.1f MB -> optimised %.1f MB -> int8 %.1f MB (%s)", result.exported_bytes / 1e6,
             result.optimized_bytes / 1e6, result.file_bytes / 1e6, fix or "stock ORTQuantizer call")
    return result
