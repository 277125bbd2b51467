"""ONNX export (optimum first, torch.onnx as the fallback) and the parity gate against PyTorch."""

import importlib.util
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.errors import ParityError
from edgekd.export.config import ExportConfig
from edgekd.ort import feed, make_session, pad_numpy

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    path: Path
    exporter: str  # "optimum" | "torch"
    seconds: float
    fallback_reason: str | None = None


class _LogitsOnly(nn.Module):
    """Positional inputs -> logits, the shape torch.onnx.export wants."""

    def __init__(self, model: nn.Module, with_token_types: bool):
        super().__init__()
        self.model, self.with_token_types = model, with_token_types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"token_type_ids": token_type_ids} if self.with_token_types else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits


def _uses_token_types(model: nn.Module) -> bool:
    return getattr(model.config, "type_vocab_size", 0) > 1


def export_with_torch(model: nn.Module, path: Path, opset: int) -> None:
    """TorchScript-based torch.onnx export with dynamic batch and sequence axes."""
    with_types = _uses_token_types(model)
    ids = torch.ones((2, 16), dtype=torch.long)
    args = (ids, torch.ones_like(ids)) + ((torch.zeros_like(ids),) if with_types else ())
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_types else [])
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names} | {"logits": {0: "batch_size"}}
    torch.onnx.export(_LogitsOnly(model, with_types).eval(), args, str(path), input_names=names,
                      output_names=["logits"], dynamic_axes=axes, opset_version=opset, dynamo=False)


def optimum_exporter_installed() -> bool:
    """optimum's ONNX exporter ships in optimum-onnx, which caps transformers below 4.58: installs on
    transformers 5 go without it. Installed but failing to import counts as installed (a real error)."""
    try:
        return importlib.util.find_spec("optimum.exporters.onnx") is not None
    except ImportError:  # a parent package (optimum, optimum.exporters) is missing
        return False


def export_with_optimum(model: nn.Module, folder: Path, opset: int) -> Path:
    from optimum.exporters.onnx import onnx_export_from_model

    onnx_export_from_model(model, folder, opset=opset, task="text-classification", do_validation=False)
    return folder / "model.onnx"


def export_onnx(model: nn.Module, folder: Path, cfg: ExportConfig) -> ExportResult:
    """Export ``model`` to ``folder``/model.onnx; optimum first unless ``cfg.exporter == 'torch'``."""
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    start = time.perf_counter()
    reason = None
    if cfg.exporter == "optimum" and not optimum_exporter_installed():
        reason = "optimum not installed"
        log.info("optimum's ONNX exporter is not installed; exporting with torch.onnx")
    elif cfg.exporter == "optimum":
        try:
            path = export_with_optimum(model, folder, cfg.opset)
            return ExportResult(path, "optimum", time.perf_counter() - start)
        except Exception as exc:  # optimum raises many types for unsupported layouts; the fallback handles them all
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("optimum could not export (%s); falling back to torch.onnx", reason)
            for leftover in folder.iterdir():
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    path = folder / "model.onnx"
    export_with_torch(model, path, cfg.opset)
    return ExportResult(path, "torch", time.perf_counter() - start, reason)


def parity_inputs(token_ids: list[list[int]], shapes: list[tuple[int, int]], pad_id: int
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Real tokenised texts cut or padded to each (batch, length): short rows carry padding."""
    inputs, cursor = [], 0
    for batch, length in shapes:
        rows = [token_ids[(cursor + i) % len(token_ids)] for i in range(batch)]
        cursor += batch
        inputs.append(pad_numpy(rows, pad_id, length))
    return inputs


@torch.inference_mode()
def check_parity(model: nn.Module, onnx_path: Path, inputs: list[tuple[np.ndarray, np.ndarray]], atol: float) -> dict:
    """Compare ONNX Runtime with PyTorch logits; raise :class:`ParityError` beyond ``atol``.

    Argmax agreement is required where the PyTorch top-2 margin exceeds 2 * atol (a near-tie may
    flip inside the tolerance without meaning anything).
    """
    session = make_session(onnx_path, threads=0)
    model = model.eval()
    max_diff, agree, decided, rows = 0.0, 0, 0, 0
    for input_ids, mask in inputs:
        ort_out = session.run(None, feed(session, input_ids, mask))[0]
        kwargs = {"token_type_ids": torch.zeros_like(torch.from_numpy(input_ids))} if _uses_token_types(model) else {}
        ref = model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask), **kwargs).logits.numpy()
        max_diff = max(max_diff, float(np.abs(ort_out - ref).max()))
        top2 = np.sort(ref, axis=-1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 2 * atol
        same = ort_out.argmax(-1) == ref.argmax(-1)
        agree += int(same.sum())
        decided += int(same[clear].sum() == clear.sum())
        rows += len(ref)
    result = {"max_abs_diff": max_diff, "argmax_agreement": agree / rows, "shapes": [list(i[0].shape) for i in inputs]}
    if max_diff > atol or decided != len(inputs):
        raise ParityError(f"{onnx_path.name}: ONNX Runtime differs from PyTorch (max |logit diff| {max_diff:.2e}, "
                          f"allowed {atol:.0e}; argmax agreement {agree}/{rows})")
    return result
