"""ONNX Runtime Mobile's format: an ONNX graph as ``model.ort`` plus the ``required_operators.config`` that a
reduced-operator build of ONNX Runtime (``--include_ops_by_config``) is compiled with.

The conversion is onnxruntime's own tool (onnxruntime.tools.convert_onnx_models_to_ort), called as a function.
Of its two styles we keep the *Fixed* one (``model.ort``, not ``model.with_runtime_opt.ort``): its graph
optimisations are applied before saving, so the stock wheel and a mobile build load it with no session option,
while the runtime-optimisation variant only pays off with compiling providers (NNAPI, CoreML) that cannot take
this BERT graph anyway (dynamic shapes, LayerNorm, Erf) and needs ``session.enable_saved_runtime_optimizations``
(a QDQ model saved with runtime optimisations failed to load with it on this machine).

The ORT format has no 4-bit tensor type (onnxruntime 1.31: the conversion succeeds, loading fails with
"Unsupported tensor data type"). edgekd's 4-bit word embeddings are stored as uint8 nibbles for that reason
(edgekd/quantize/block_embeddings.py); a graph with INT4/UINT4 tensors is refused before converting.
"""

import contextlib
import io
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.errors import AssetError
from edgekd.ort import make_session, ort_logits

log = logging.getLogger(__name__)

MODEL_FILE = "model.ort"
OPERATORS_FILE = "required_operators.config"


@dataclass
class OrtResult:
    path: Path  # <out_dir>/model.ort
    required_operators: Path  # <out_dir>/required_operators.config
    seconds: float
    file_bytes: int

    @property
    def extra_files(self) -> dict[str, Path]:
        """Files that travel with the model, by the artifact meta key that names them."""
        return {"required_operators": self.required_operators}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def convert_to_ort(onnx_path: Path, out_dir: Path) -> OrtResult:
    """Write ``out_dir/model.ort`` and ``out_dir/required_operators.config`` for the ONNX file ``onnx_path``.

    The .ort is loaded once before returning; a graph that cannot be converted or loaded raises AssetError
    naming the file.
    """
    import onnx
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise AssetError(f"{onnx_path}: no such ONNX file to convert to .ort")
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgekd-ort-") as tmp:
        try:
            model = onnx.load(str(onnx_path), load_external_data=False)
            four_bit = [t.name for t in model.graph.initializer if t.data_type in (onnx.TensorProto.INT4,
                                                                                  onnx.TensorProto.UINT4)]
            if four_bit:
                raise AssetError(f"the ORT format has no 4-bit tensor type ({four_bit[0]}); store 4-bit weights as "
                                 "uint8 nibbles (edgekd's quantize embedding_bits: 4 does)")
            chatter = io.StringIO()  # the tool prints its progress; kept for the debug log
            with contextlib.redirect_stdout(chatter):
                # target_platform None: the file stays portable (no x86 NCHWc layouts, no Arm-only int8 QDQ fusions).
                convert_onnx_models_to_ort(onnx_path, output_dir=Path(tmp) / "out",
                                           optimization_styles=[OptimizationStyle.Fixed])
            log.debug("convert_onnx_models_to_ort %s: %s", onnx_path, chatter.getvalue().strip())
        except AssetError as exc:
            raise AssetError(f"{onnx_path}: cannot convert to .ort: {exc}") from None
        except Exception as exc:  # onnx / onnxruntime raise their own types; one line names the file
            raise AssetError(f"{onnx_path}: cannot convert to .ort: {_one_line(exc)}") from None
        written = Path(tmp) / "out"
        ort_files, configs = sorted(written.glob("*.ort")), sorted(written.glob("*.config"))
        if len(ort_files) != 1 or len(configs) != 1:
            raise AssetError(f"{onnx_path}: the ORT converter wrote {[p.name for p in written.iterdir()]}, expected "
                             "one .ort and one .config")
        shutil.move(ort_files[0], out_dir / MODEL_FILE)
        # The config's header names the temporary file it was generated from: name the shipped one instead.
        text = configs[0].read_text().replace(str(ort_files[0]), MODEL_FILE)
        (out_dir / OPERATORS_FILE).write_text(text)
    try:
        make_session(out_dir / MODEL_FILE, threads=1)
    except Exception as exc:
        raise AssetError(f"{onnx_path}: converted to {out_dir / MODEL_FILE}, which onnxruntime cannot load: "
                         f"{_one_line(exc)}") from None
    return OrtResult(out_dir / MODEL_FILE, out_dir / OPERATORS_FILE, time.perf_counter() - start,
                     (out_dir / MODEL_FILE).stat().st_size)


def required_operators(config: Path) -> dict[str, set[str]]:
    """``{"ai.onnx": {...}, "com.microsoft": {...}}`` from a required_operators.config (lines domain;opset;ops)."""
    ops: dict[str, set[str]] = {}
    for line in Path(config).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            domain, _opset, names = line.split(";", 2)
            ops.setdefault(domain, set()).update(n.strip() for n in names.split(",") if n.strip())
    return ops


def ort_file_logits(path: Path, token_ids: list[list[int]], pad_id: int) -> np.ndarray:
    """Logits [N, classes] of a .ort file with the stock onnxruntime wheel (it reads the format directly)."""
    return ort_logits(make_session(path), token_ids, pad_id)
