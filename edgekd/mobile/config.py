"""Config of the mobile stage: which models become which phone-runtime files, and the parity gate each passes.

A target is one name in ``MobileTargetName``, one module (edgekd/mobile/<name>.py) and one entry in the
table ``edgekd.mobile.stage.TARGETS``. ONNX Runtime Mobile's ``.ort`` converts each ONNX file; ExecuTorch's ``.pte``
and LiteRT's ``.tflite`` convert the PyTorch student those ONNX files came from, once per precision (fp32, int8).
"""

from typing import Literal

from pydantic import Field, field_validator

from edgekd._config_base import StrictModel

MobileTargetName = Literal["ort", "executorch", "litert"]
# Targets converted from the PyTorch model rather than from ONNX files (the table's ``source="pytorch"``).
PYTORCH_TARGETS = ("executorch", "litert")
# The libraries that write and run each target's files: the stage's cache key covers their versions.
TARGET_LIBRARIES = {"ort": (), "executorch": ("executorch", "torchao"),
                    "litert": ("litert-torch", "ai-edge-litert", "ai-edge-quantizer")}


def mobile_artifact(onnx_artifact: str, target: str) -> str:
    """``student.int8-dynamic.onnx`` -> ``student.int8-dynamic.ort``: the name (and folder) of a converted file."""
    return f"{onnx_artifact.removesuffix('.onnx')}.{target}"


def pytorch_artifact(model: str, suffix: str, precision: str) -> str:
    """(``student``, ``pte``, ``int8``) -> ``student.int8.pte``; fp32 -> ``student.pte``."""
    return f"{model}.{suffix}" if precision == "fp32" else f"{model}.{precision}.{suffix}"


class MobileConfig(StrictModel):
    """Convert exported (and quantized) ONNX classifiers to phone runtimes' formats, each file gated on its
    argmax agreement with the PyTorch model on the validation split."""

    kind: Literal["mobile"] = "mobile"
    targets: list[MobileTargetName] = Field(
        ["ort"], min_length=1, description="formats to write: ort (ONNX Runtime Mobile: model.ort plus the "
        "required_operators.config a reduced-operator build takes, one per ONNX file), executorch (model.pte, XNNPACK "
        "delegate, any length up to max_length) and litert (model.tflite, one signature per length bucket): these two "
        "convert the PyTorch model the ONNX files were exported from, fp32 and int8 (<model>.pte, <model>.int8.pte)")
    models: list[str] | None = Field(
        None, min_length=1, description="ONNX artifacts to convert, e.g. [student.int8-dynamic.onnx] (None: every "
        "ONNX artifact of role student, fp32 and int8); executorch and litert convert the PyTorch models these were "
        "exported from (with no ONNX student in the run: the newest PyTorch student)")
    min_agreement_fp32: float = Field(
        0.995, ge=0.0, le=1.0, description="smallest share of validation texts on which an fp32 file (converted "
        "from an fp32 ONNX model, or an fp32 .pte/.tflite) predicts the same class as the PyTorch model; below it the "
        "file is not declared")
    min_agreement_int8: float = Field(
        0.99, ge=0.0, le=1.0, description="the same for quantized files (from int8 / 4-bit-embedding ONNX models, "
        "and the int8 .pte/.tflite, which are always held to it against the PyTorch model)")
    gate_against: Literal["source", "pytorch"] = Field(
        "source", description="what each file must agree with: source (the model it was converted from: for .ort "
        "its ONNX file, so the gate checks the conversion and the quantize stage's guard owns int8 accuracy) or "
        "pytorch (the PyTorch student, so int8 files are also held to min_agreement_int8 against fp32); agreement "
        "with both is recorded either way. Files converted from PyTorch (executorch, litert) are gated against it")

    @field_validator("models")
    @classmethod
    def _onnx_names(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            bad = [m for m in v if not m.endswith(".onnx")]
            if bad:
                raise ValueError(f"{bad[0]!r} is not an ONNX artifact name; use names ending in .onnx, "
                                 "e.g. student.onnx or student.int8-dynamic.onnx")
            if len(set(v)) != len(v):
                raise ValueError("each model may be named once")
        return v

    @field_validator("targets")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each target may be named once")
        return v

    def key_extras(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(pipeline settings, libraries) the cache key covers beyond the stage entry's: the chosen targets' converters."""
        return (), tuple(lib for t in self.targets for lib in TARGET_LIBRARIES[t])

    def task_problem(self, pipeline) -> str | None:
        """(Not about the task:) with ``models`` left out, some earlier stage must write an ONNX model (or, for
        executorch / litert alone, the PyTorch student)."""
        if self.models is not None:
            return None
        kinds = [s.kind for s in pipeline.stages]
        earlier = [p for s in pipeline.stages[: kinds.index("mobile")] for p in s.provides()]
        if any(p.endswith(".onnx") for p in earlier):
            return None
        if all(t in PYTORCH_TARGETS for t in self.targets):
            return None if "student" in earlier else ("no earlier stage writes a student to convert: put distill "
                                                      "(and export) before mobile")
        return "no earlier stage writes an ONNX model to convert: put export (and quantize) before mobile"

    @staticmethod
    def summary(m: dict) -> str:
        def one(name: str, v: dict) -> str:
            if v["gate"] != "passed":
                return f"{name}: {v['gate']}"
            if "agreement_vs_onnx" not in v:  # converted from the PyTorch model
                return (f"{name}: {v['file_bytes'] / 1e6:.1f} MB, agreement with PyTorch "
                        f"{v['agreement_vs_pytorch']:.4f} (max |Δlogit| {v['max_abs_diff_vs_pytorch']:.1e})")
            return (f"{name}: {v['file_bytes'] / 1e6:.1f} MB, agreement with its .onnx {v['agreement_vs_onnx']:.4f} "
                    f"(max |Δlogit| {v['max_abs_diff_vs_onnx']:.1e}), with PyTorch {v['agreement_vs_pytorch']:.4f}")

        return "; ".join(one(k, v) for k, v in m.items())

    def requires(self) -> list[str]:
        return list(self.models or [])

    def provides(self) -> list[str]:
        """What it tries to write from ONNX files; a file whose parity gate fails is left out at run time. The
        .pte / .tflite files are named after PyTorch models known only at run time, so they are not listed."""
        return [mobile_artifact(m, t) for m in self.models or [] for t in self.targets
                if t not in PYTORCH_TARGETS]
