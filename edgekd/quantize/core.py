"""Post-training int8 quantization of an ONNX classifier with ONNX Runtime.

dynamic: weights int8 ahead of time, activation ranges computed per call (QOperator format).
static:  weights and activations int8 with ranges calibrated on training batches (QDQ format),
         after ORT's pre-processing (shape inference + graph clean-up) of the fp32 graph.
Gather is quantized too, or the word embeddings (half of a small encoder's weights) stay fp32.
"""

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.ort import make_session, ort_logits, pad_numpy

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


def quantize_dynamic_int8(src: Path, dst: Path, preset: str) -> QuantizeResult:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    start, p = time.perf_counter(), PRESETS[preset]
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=OP_TYPES, per_channel=p.per_channel,
                     reduce_range=p.reduce_range, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
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


def calibration_batches(token_ids: list[list[int]], pad_id: int, batch_size: int = 16):
    return [pad_numpy(token_ids[i : i + batch_size], pad_id) for i in range(0, len(token_ids), batch_size)]


def quantize_static_int8(src: Path, dst: Path, preset: str, method: str,
                         batches: list[tuple[np.ndarray, np.ndarray]]) -> QuantizeResult:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    start, p = time.perf_counter(), PRESETS[preset]
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(prefix="edgekd-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        reader = _Batches(make_session(prepared).get_inputs(), batches)
        quantize_static(prepared, dst, reader, quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=OP_TYPES, per_channel=p.per_channel,
                        reduce_range=p.reduce_range, calibrate_method=methods[method],
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return QuantizeResult(dst, "static", time.perf_counter() - start)


def onnx_predictions(path: Path, token_ids: list[list[int]], pad_id: int) -> np.ndarray:
    return ort_logits(make_session(path), token_ids, pad_id).argmax(-1)

