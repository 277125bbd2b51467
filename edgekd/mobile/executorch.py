"""ExecuTorch's format: the PyTorch student as ``model.pte`` lowered to the XNNPACK delegate, fp32 or int8.

One file takes every length from 2 to ``max_length`` (torch.export with a dynamic sequence dimension), so a text runs
at its own length, as on ONNX Runtime. int8 is pt2e with the XNNPACK quantizer: per-channel int8 weights and
*dynamic* int8 activations (scales per call, like ORT's and LiteRT's dynamic int8). Static activation scales lost
1.3-1.6 accuracy points on the MiniLM student (94.5 % argmax agreement) where dynamic kept 99.6 %. The XNNPACK
quantizer leaves the embedding in fp32, so an int8 .pte is far larger than ORT's int8 file (24 vs 8.5 MB there).

Outside XNNPACK (portable kernels): the embedding lookup, layer norm and the mask arithmetic, so the lowered graph has
several delegate segments; their count is recorded as evidence that XNNPACK runs the matrix work (without it the same
model ran ~50x slower). The maximum length is stored in the file as the constant method ``max_length``.
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.errors import AssetError, DataError
from edgekd.mobile.graph import example_inputs, exportable, missing_library, padded

log = logging.getLogger(__name__)

MODEL_FILE = "model.pte"
MIN_LENGTH = 2  # torch.export specialises sizes 0 and 1, so the dynamic dimension starts at 2


@dataclass
class PteResult:
    path: Path  # <out_dir>/model.pte
    seconds: float
    file_bytes: int
    delegate_segments: int  # executorch_call_delegate nodes in the lowered graph (XNNPACK)
    max_length: int
    extra_files: dict[str, Path] = field(default_factory=dict)

    @property
    def meta(self) -> dict:
        return {"delegate": "XNNPACK", "delegate_segments": self.delegate_segments, "max_length": self.max_length}


def require(convert: bool = True) -> None:
    """Raise the one-line ConfigError when executorch's runtime (with ``convert``: its exporter and torchao, which
    the bench's runner does not load) is not installed."""
    try:
        import executorch.runtime  # noqa: F401

        if convert:
            import executorch.exir  # noqa: F401
            import torchao  # noqa: F401
    except ImportError as exc:
        raise missing_library("the executorch target", "executorch", exc) from None


def _quantized(model, example, dynamic_shapes, calib_ids: list[list[int]], pad_id: int):
    """pt2e int8: per-channel weights, dynamic activations; observers see a few real texts first."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                          get_symmetric_quantization_config)
    from torch.export import export
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
    prepared = prepare_pt2e(export(model, example, dynamic_shapes=dynamic_shapes).module(),
                            XNNPACKQuantizer().set_global(config))
    with torch.no_grad():
        for ids in calib_ids:
            x, m = padded(ids, max(len(ids), MIN_LENGTH), pad_id)
            prepared(torch.from_numpy(x), torch.from_numpy(m))
    return convert_pt2e(prepared)


def export_pte(model_dir: Path, out_dir: Path, precision: str, calib_ids: list[list[int]], max_length: int,
               pad_id: int = 0) -> PteResult:
    """Write ``out_dir/model.pte`` for the classifier in ``model_dir``; ``precision`` is "fp32" or "int8".

    ``calib_ids`` (token ids of a few training texts, each at most ``max_length``) feed the int8 observers. The
    file is loaded once before returning; a model that cannot be exported or loaded raises AssetError naming it.
    """
    require()
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from torch.export import Dim, export

    if precision not in ("fp32", "int8"):
        raise ValueError(f"precision {precision!r}: use fp32 or int8")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    start = time.perf_counter()
    model = exportable(model_dir)
    seq = Dim("seq", min=MIN_LENGTH, max=max_length)
    shapes = {"input_ids": {1: seq}, "attention_mask": {1: seq}}
    example = example_inputs(max(MIN_LENGTH, min(16, max_length)))  # a length strictly inside the range
    try:
        with torch.no_grad():
            if precision == "int8":
                model = _quantized(model, example, shapes, calib_ids, pad_id)
            program = export(model, example, dynamic_shapes=shapes)
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                               constant_methods={"max_length": max_length})
            graph = edge.exported_program().graph_module.graph
            segments = sum(1 for n in graph.nodes if n.op == "call_function" and "call_delegate" in str(n.target))
            buffer = edge.to_executorch().buffer
    except Exception as exc:  # torch.export / executorch raise many types; one line names the model
        raise AssetError(f"{model_dir}: cannot export to ExecuTorch ({precision}): "
                         f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MODEL_FILE
    path.write_bytes(buffer)
    try:
        _load(path)
    except Exception as exc:
        raise AssetError(f"{model_dir}: wrote {path}, which the ExecuTorch runtime cannot load: {exc}") from None
    seconds = time.perf_counter() - start
    log.info("%s: %s .pte %.2f MB in %.1f s, %d XNNPACK segments", model_dir.name, precision, len(buffer) / 1e6,
             seconds, segments)
    return PteResult(path, seconds, len(buffer), segments, max_length)


def _load(path: Path):
    """(program, forward method, max length) of a .pte file; the caller keeps the program alive with the method."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(str(path))
    longest = program.load_method("max_length").execute([])[0] if "max_length" in program.method_names else None
    return program, program.load_method("forward"), int(longest) if longest is not None else None


def set_threads(threads: int) -> None:
    """XNNPACK's thread pool size for this process (ExecuTorch's default is every core)."""
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    _unsafe_reset_threadpool(threads)


class PteModel:
    """A loaded .pte: one text at a time, at its own length (padded with ``pad_id`` only below 2 tokens)."""

    def __init__(self, path: Path, pad_id: int):
        require(convert=False)
        import torch

        self.torch, self.path, self.pad_id = torch, Path(path), pad_id
        self.program, self.method, self.max_length = _load(self.path)

    def __call__(self, ids) -> np.ndarray:
        """Logits [classes] of one text."""
        if self.max_length is not None and len(ids) > self.max_length:
            raise DataError(f"{self.path}: a text of {len(ids)} tokens is longer than the {self.max_length} this "
                            "file was exported for")
        x, m = padded(ids, max(len(ids), MIN_LENGTH), self.pad_id)
        return self.method.execute([self.torch.from_numpy(x), self.torch.from_numpy(m)])[0][0].numpy()


def pte_logits(path: Path, ids: list[list[int]], pad_id: int, threads: int = 1) -> np.ndarray:
    """Logits [N, classes] of a .pte file, batch 1 and unpadded (as the bench runs it), on ``threads`` threads."""
    set_threads(threads)
    model = PteModel(path, pad_id)
    return np.stack([model(row) for row in ids]).astype(np.float32)
