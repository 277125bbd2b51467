from typing import Literal

from pydantic import Field, model_validator

from edgekd._config_base import StrictModel

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


class QuantGuard(StrictModel):
    """Keep the int8 model's validation accuracy within a budget by leaving the most sensitive nodes in float."""

    max_drop_points: float = Field(1.0, ge=0.0, le=100.0,
                                   description="largest allowed validation accuracy drop vs the fp32 ONNX model, "
                                               "in percentage points")
    max_excluded: int = Field(8, ge=1, le=10_000, description="most MatMul/Gather nodes kept in float")
    examples: int = Field(256, ge=8, le=100_000,
                          description="validation examples for the per-node sensitivity scan (mean KL vs fp32 logits)")


class QuantizeConfig(StrictModel):
    """Post-training int8 on the ONNX graph: dynamic, and static QDQ calibrated on training batches."""

    kind: Literal["quantize"] = "quantize"
    models: list[str] = Field(["student"], min_length=1, description="models whose ONNX export is quantized")
    modes: list[Literal["dynamic", "static"]] = Field(["dynamic", "static"], min_length=1, description="int8 flavours")
    preset: Literal["avx2", "avx512_vnni", "arm64"] = Field(
        "avx2", description="target CPU: avx2 (x86 without VNNI), avx512_vnni, arm64 (phones)"
    )
    calibration_method: Literal["minmax", "entropy", "percentile", "auto"] = Field(
        "minmax", description="static calibration; auto: the best of minmax, entropy, percentile on validation")
    calibration_examples: int = Field(256, ge=8, le=100_000, description="training examples used for calibration")
    compare_calibration: bool = Field(False, description="static: also quantize with every calibration method and "
                                                         "report each one's validation accuracy and time")
    guard: QuantGuard | None = Field(None, description="accuracy guard: keep sensitive nodes in float until the "
                                                       "validation drop fits the budget; none: no guard")

    @model_validator(mode="after")
    def _calibration_needs_static(self) -> "QuantizeConfig":
        if "static" not in self.modes:
            if self.calibration_method == "auto":
                raise ValueError("calibration_method 'auto' applies to static int8 only: add 'static' to modes")
            if self.compare_calibration:
                raise ValueError("compare_calibration applies to static int8 only: add 'static' to modes")
        return self

    @staticmethod
    def summary(m: dict) -> str:
        def one(name: str, v: dict) -> str:
            text = f"{name}: validation {100 * v['validation']['accuracy']:.2f}%, {v['file_bytes'] / 1e6:.1f} MB"
            if v.get("calibration_picked"):
                text += f", calibration {v['calibration_picked']} (picked on validation)"
            if v.get("guard"):
                text += f", {len(v['guard']['excluded'])} node(s) kept float"
            return text

        return "; ".join(one(k, v) for k, v in m.items())

    def requires(self) -> list[str]:
        return [f"{m}.onnx" for m in self.models]

    def provides(self) -> list[str]:
        return [f"{m}.int8-{mode}.onnx" for m in self.models for mode in self.modes]
