"""Post-training int8 quantization of an ONNX classifier with ONNX Runtime.

dynamic: weights int8 ahead of time, activation ranges computed per call (QOperator format).
static:  weights and activations int8 with ranges calibrated on training batches (QDQ format),
         after ORT's pre-processing (shape inference + graph clean-up) of the fp32 graph.
Gather is quantized too, or the word embeddings (half of a small encoder's weights) stay fp32.
Every quantizer takes ``exclude``: node names (of the graph it quantizes) kept in float.
``block_embeddings.with_block_embeddings`` wraps either flavour so the embedding tables become quantized blocks.
"""

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.metrics import accuracy
from edgekd.ort import make_session, ort_logits, pad_numpy
from edgekd.quantize.config import CALIBRATION_METHODS

log = logging.getLogger(__name__)

OP_TYPES = ["MatMul", "Gather"]


@dataclass(frozen=True)
class Preset:
    """What the target CPU's int8 kernels want (mirrors optimum's AutoQuantizationConfig presets)."""

    per_channel: bool
    # x86 without VNNI multiplies u8 x s8 into saturating 16-bit sums; 7-bit weights avoid overflow.
    reduce_range: bool


PRESETS = {
    "avx2": Preset(per_channel=True, reduce_range=True),
    "avx512_vnni": Preset(per_channel=True, reduce_range=False),
    "arm64": Preset(per_channel=True, reduce_range=False),
}


@dataclass
class QuantizeResult:
    path: Path
    mode: str
    seconds: float


def quantize_dynamic_int8(src: Path, dst: Path, preset: str, exclude: Sequence[str] = ()) -> QuantizeResult:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    start, p = time.perf_counter(), PRESETS[preset]
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=OP_TYPES, per_channel=p.per_channel,
                     reduce_range=p.reduce_range, nodes_to_exclude=list(exclude),
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return QuantizeResult(dst, "dynamic", time.perf_counter() - start)


class _Batches:
    """ORT CalibrationDataReader over padded token-id batches."""

    def __init__(self, session_inputs, batches: list[tuple[np.ndarray, np.ndarray]]):
        self._names = {i.name for i in session_inputs}
        self._batches = batches
        self._iter = iter(batches)

    def get_next(self):
        batch = next(self._iter, None)
        if batch is None:
            return None
        input_ids, mask = batch
        inputs = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        return {k: v for k, v in inputs.items() if k in self._names}

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def calibration_batches(token_ids: list[list[int]], pad_id: int, batch_size: int = 16, uniform: bool = False):
    """Padded (input_ids, attention_mask) batches. ``uniform``: every batch [batch_size, longest text], a
    ragged last batch dropped; ORT's histogram calibrators (entropy, percentile) stack all batches' outputs."""
    if not uniform:
        return [pad_numpy(token_ids[i : i + batch_size], pad_id) for i in range(0, len(token_ids), batch_size)]
    batch_size = min(batch_size, len(token_ids))
    length = max(len(x) for x in token_ids)
    full = len(token_ids) - len(token_ids) % batch_size
    return [pad_numpy(token_ids[i : i + batch_size], pad_id, length) for i in range(0, full, batch_size)]


def prepare_for_static(src: Path, dst: Path) -> Path:
    """ORT's pre-processing (shape inference, graph clean-up). It renames and folds nodes: exclusions for static
    int8 name nodes of this graph, not of ``src``."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


def quantize_static_prepared(prepared: Path, dst: Path, preset: str, method: str,
                             batches: list[tuple[np.ndarray, np.ndarray]], exclude: Sequence[str] = (),
                             calibration_cache: Path | None = None) -> QuantizeResult:
    """Static QDQ int8 of an already prepared graph. ``calibration_cache`` (a JSON file): ranges computed on
    the first call and reused after, so re-quantizing with other exclusions costs no calibration."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    start, p = time.perf_counter(), PRESETS[preset]
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    reader = _Batches(make_session(prepared).get_inputs(), batches)
    quantize_static(prepared, dst, reader, quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, op_types_to_quantize=OP_TYPES, per_channel=p.per_channel,
                    reduce_range=p.reduce_range, calibrate_method=methods[method], nodes_to_exclude=list(exclude),
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                    calibration_cache_path=calibration_cache)
    return QuantizeResult(dst, "static", time.perf_counter() - start)


def quantize_static_int8(src: Path, dst: Path, preset: str, method: str,
                         batches: list[tuple[np.ndarray, np.ndarray]], exclude: Sequence[str] = ()) -> QuantizeResult:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekd-quant-") as tmp:
        prepared = prepare_for_static(src, Path(tmp) / "prepared.onnx")
        quantize_static_prepared(prepared, dst, preset, method, batches, exclude)
    return QuantizeResult(dst, "static", time.perf_counter() - start)


# (destination, node names kept in float) -> the int8 model at destination
Quantizer = Callable[[Path, Sequence[str]], QuantizeResult]


def make_quantizer(src: Path, workdir: Path, mode: str, preset: str, method: str = "minmax",
                   token_ids: list[list[int]] | None = None, pad_id: int = 0) -> tuple[Path, Quantizer]:
    """The graph whose node names exclusions refer to, and a quantizer that can be called many times.

    Static mode pre-processes ``src`` once into ``workdir`` and calibrates on ``token_ids`` once (ORT's
    calibration cache); dynamic mode quantizes ``src`` directly.
    """
    if mode == "dynamic":
        def quantize_dynamic(dst: Path, exclude: Sequence[str] = ()) -> QuantizeResult:
            return quantize_dynamic_int8(src, dst, preset, exclude)

        return src, quantize_dynamic
    workdir.mkdir(parents=True, exist_ok=True)
    prepared = prepare_for_static(src, workdir / "prepared.onnx")
    batches = calibration_batches(token_ids, pad_id, uniform=method != "minmax")
    cache = workdir / f"calibration-{method}.json"

    def quantize(dst: Path, exclude: Sequence[str] = ()) -> QuantizeResult:
        return quantize_static_prepared(prepared, dst, preset, method, batches, exclude, cache)

    return prepared, quantize


def quantizable_nodes(graph_path: Path, mode: str) -> list[str]:
    """Names of the nodes int8 would change: MatMuls with a weight and Gathers of a float table (embeddings);
    static QDQ also quantizes activation x activation MatMuls (attention scores and context), dynamic does not."""
    import onnx

    graph = onnx.load(str(graph_path), load_external_data=False).graph
    float_weights = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    names = []
    for node in graph.node:
        if node.op_type == "Gather" and node.input[0] in float_weights:
            names.append(node.name)
        elif node.op_type == "MatMul" and (mode == "static" or node.input[1] in float_weights):
            names.append(node.name)
    return names


def onnx_predictions(path: Path, token_ids: list[list[int]], pad_id: int) -> np.ndarray:
    return ort_logits(make_session(path), token_ids, pad_id).argmax(-1)



def compare_calibrations(src: Path, workdir: Path, preset: str, calib_ids: list[list[int]], pad_id: int,
                         val_ids: list[list[int]], val_labels) -> dict[str, dict]:
    """Static int8 with every calibration method: validation accuracy, and seconds for pre-processing,
    calibration and quantization. Each method's ranges stay cached in ``workdir``/method for reuse."""
    rows = {}
    for method in CALIBRATION_METHODS:
        start = time.perf_counter()
        _, quantize = make_quantizer(src, workdir / method, "static", preset, method, calib_ids, pad_id)
        dst = quantize(workdir / method / "int8.onnx").path
        seconds = time.perf_counter() - start
        rows[method] = {"validation_accuracy": round(accuracy(onnx_predictions(dst, val_ids, pad_id), val_labels), 6),
                        "seconds": round(seconds, 2)}
        log.info("static int8, %s calibration: validation accuracy %.4f in %.1f s", method,
                 rows[method]["validation_accuracy"], seconds)
    return rows


def best_calibration(rows: dict[str, dict]) -> str:
    """Highest validation accuracy; a tie goes to the method listed first (minmax is the cheapest)."""
    return max(CALIBRATION_METHODS, key=lambda m: (rows[m]["validation_accuracy"], -CALIBRATION_METHODS.index(m)))
