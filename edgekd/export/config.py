from typing import Literal

from pydantic import Field

from edgekd._config_base import StrictModel


class ExportConfig(StrictModel):
    """ONNX export with dynamic batch and sequence axes, gated by a parity check against PyTorch."""

    kind: Literal["export"] = "export"
    models: list[str] = Field(["teacher", "student"], min_length=1, description="models to export (stage outputs)")
    exporter: Literal["optimum", "torch"] = Field("optimum", description="optimum, falling back to torch.onnx; or torch only")
    opset: int = Field(18, ge=14, le=21, description="ONNX opset")
    parity_atol: float = Field(1e-3, gt=0.0, le=1.0, description="largest allowed |logit difference| ONNX vs PyTorch")
    parity_shapes: list[tuple[int, int]] = Field(
        [(1, 8), (2, 37), (4, 128)], min_length=1, description="(batch, sequence) shapes checked, padding included"
    )

    @staticmethod
    def summary(m: dict) -> str:
        return "; ".join(f"{k}: {v['exporter']}, max |Δlogit| {v['parity']['max_abs_diff']:.1e}" for k, v in m.items())

    def requires(self) -> list[str]:
        return list(self.models)

    def provides(self) -> list[str]:
        return [f"{m}.onnx" for m in self.models]
