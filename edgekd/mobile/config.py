"""Config of the mobile stage: which ONNX files become which phone-runtime files, and the parity gate each passes.

A target is one name in ``MobileTargetName``, one module (edgekd/mobile/<name>.py) and one entry in the
table ``edgekd.mobile.stage.TARGETS``; ONNX Runtime Mobile's ``.ort`` is the first.
"""

from typing import Literal

from pydantic import Field, field_validator

from edgekd._config_base import StrictModel

MobileTargetName = Literal["ort"]


def mobile_artifact(onnx_artifact: str, target: str) -> str:
    """``student.int8-dynamic.onnx`` -> ``student.int8-dynamic.ort``: the name (and folder) of a converted file."""
    return f"{onnx_artifact.removesuffix('.onnx')}.{target}"


class MobileConfig(StrictModel):
    """Convert exported (and quantized) ONNX classifiers to phone runtimes' formats, each file gated on its
    argmax agreement with the PyTorch model on the validation split."""

    kind: Literal["mobile"] = "mobile"
    targets: list[MobileTargetName] = Field(
        ["ort"], min_length=1, description="formats to write: ort (ONNX Runtime Mobile: model.ort plus the "
        "required_operators.config a reduced-operator build takes)")
    models: list[str] | None = Field(
        None, min_length=1, description="ONNX artifacts to convert, e.g. [student.int8-dynamic.onnx] (None: every "
        "ONNX artifact of role student, fp32 and int8)")
    min_agreement_fp32: float = Field(
        0.995, ge=0.0, le=1.0, description="smallest share of validation texts on which a file converted from an "
        "fp32 ONNX model predicts the same class as the PyTorch model; below it the file is not declared")
    min_agreement_int8: float = Field(
        0.99, ge=0.0, le=1.0, description="the same for files converted from quantized (int8, 4-bit embedding) "
        "ONNX models")
    gate_against: Literal["source", "pytorch"] = Field(
        "source", description="what each file must agree with: source (the model it was converted from: for .ort "
        "its ONNX file, so the gate checks the conversion and the quantize stage's guard owns int8 accuracy) or "
        "pytorch (the PyTorch student, so int8 files are also held to min_agreement_int8 against fp32); agreement "
        "with both is recorded either way")

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

    def task_problem(self, pipeline) -> str | None:
        """(Not about the task:) with ``models`` left out, some earlier stage must write an ONNX model."""
        if self.models is not None:
            return None
        kinds = [s.kind for s in pipeline.stages]
        earlier = [p for s in pipeline.stages[: kinds.index("mobile")] for p in s.provides()]
        if not any(p.endswith(".onnx") for p in earlier):
            return "no earlier stage writes an ONNX model to convert: put export (and quantize) before mobile"
        return None

    @staticmethod
    def summary(m: dict) -> str:
        def one(name: str, v: dict) -> str:
            if v["gate"] != "passed":
                return f"{name}: {v['gate']}"
            return (f"{name}: {v['file_bytes'] / 1e6:.1f} MB, agreement with its .onnx {v['agreement_vs_onnx']:.4f} "
                    f"(max |Δlogit| {v['max_abs_diff_vs_onnx']:.1e}), with PyTorch {v['agreement_vs_pytorch']:.4f}")

        return "; ".join(one(k, v) for k, v in m.items())

    def requires(self) -> list[str]:
        return list(self.models or [])

    def provides(self) -> list[str]:
        """What it tries to write; a file whose parity gate fails is left out at run time."""
        return [mobile_artifact(m, t) for m in self.models or [] for t in self.targets]
