from typing import Literal

from pydantic import Field

from edgekd._config_base import StrictModel


class ExportLMConfig(StrictModel):
    parity_windows: int = Field(4, ge=1, le=10_000, description="validation windows scored by ONNX and PyTorch "
                                "(perplexity, top-1 agreement); the first is also decoded step by step with the KV cache")


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
    lm: ExportLMConfig | None = Field(None, description="task causal-lm only (filled in for it): the parity "
                                        "check of a model with a KV cache")

    _omit_if = {"lm": None}  # classification dumps (and cache keys) stay as they were before `lm` existed

    def task_problem(self, pipeline) -> str | None:
        if pipeline.task == "causal-lm":
            wrong = [f for f in ("parity_atol", "parity_shapes") if f in self.model_fields_set]
            if self.exporter != "optimum":
                wrong.append("exporter: torch")
            if wrong:
                return (f"{', '.join(wrong)} apply to text-classification only; causal-lm models export through "
                        "optimum's text-generation-with-past and are checked with lm: {parity_windows}")
        elif self.lm is not None:
            return "lm applies to task causal-lm only"
        return None

    @staticmethod
    def summary(m: dict) -> str:
        def one(name: str, v: dict) -> str:
            text = f"{name}: {v['exporter']}, max |Δlogit| {v['parity']['max_abs_diff']:.1e}"
            if "kv_top1_agreement" in v["parity"]:  # a causal LM: perplexity and cached decoding checked too
                text += (f", perplexity {v['parity']['ppl_onnx']:.3g} vs {v['parity']['ppl_torch']:.3g}, KV-decode "
                         f"top-1 {v['parity']['kv_top1_agreement']:.3f}")
            return text

        return "; ".join(one(k, v) for k, v in m.items())

    def requires(self) -> list[str]:
        return list(self.models)

    def provides(self) -> list[str]:
        return [f"{m}.onnx" for m in self.models]
