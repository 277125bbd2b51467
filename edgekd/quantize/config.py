from typing import Literal

from pydantic import Field

from edgekd._config_base import StrictModel


class QuantizeConfig(StrictModel):
    """Post-training int8 on the ONNX graph: dynamic, and static QDQ calibrated on training batches."""

    kind: Literal["quantize"] = "quantize"
    models: list[str] = Field(["student"], min_length=1, description="models whose ONNX export is quantized")
    modes: list[Literal["dynamic", "static"]] = Field(["dynamic", "static"], min_length=1, description="int8 flavours")
    preset: Literal["avx2", "avx512_vnni", "arm64"] = Field(
        "avx2", description="target CPU: avx2 (x86 without VNNI), avx512_vnni, arm64 (phones)"
    )
    calibration_method: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="static calibration")
    calibration_examples: int = Field(256, ge=8, le=100_000, description="training examples used for calibration")

    @staticmethod
    def summary(m: dict) -> str:
        return "; ".join(f"{k}: validation {100 * v['validation']['accuracy']:.2f}%, {v['file_bytes'] / 1e6:.1f} MB"
                         for k, v in m.items())

    def requires(self) -> list[str]:
        return [f"{m}.onnx" for m in self.models]

    def provides(self) -> list[str]:
        return [f"{m}.int8-{mode}.onnx" for m in self.models for mode in self.modes]
