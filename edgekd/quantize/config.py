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


class QuantizeLMConfig(StrictModel):
    """Causal LMs: int8 dynamic (per-tensor) and int4 weight-only (MatMulNBits), each scored against fp32."""

    modes: list[Literal["dynamic", "int4"]] = Field(
        ["dynamic", "int4"], min_length=1, description="dynamic: int8 per-tensor weights (per-channel broke SmolLM2); "
        "int4: 4-bit weights in blocks, the tied embedding / lm_head included")
    block_size: int = Field(32, ge=16, le=256, description="int4: weights per quantization block (a power of two)")
    accuracy_level: Literal[0, 1, 2, 3, 4] = Field(
        4, description="int4: MatMulNBits compute type (4: int8 activations, about 2x faster decoding on CPU; 0: unset)")
    windows: int = Field(16, ge=1, le=100_000, description="validation windows each quantized model is scored on "
                         "against its fp32 model")
    max_perplexity_ratio: float | None = Field(
        2.0, gt=1.0, description="stop if a quantized model's validation perplexity exceeds this multiple of its fp32 "
        "model's (None: no gate)")

    @model_validator(mode="after")
    def _block_is_power_of_two(self) -> "QuantizeLMConfig":
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size: {self.block_size} is not a power of two; use 16, 32, 64, 128 or 256")
        return self


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
    embedding_bits: Literal[8, 4] = Field(
        8, description="embedding tables: 8 (int8 like every other weight) or 4 (the word table as symmetric 4-bit "
        "blocks of 16 along hidden with fp16 scales, and the position table as 8-bit blocks of 32 instead of one "
        "int8 scale per table, read by ONNX Runtime's GatherBlockQuantized: about 40% fewer bytes for the word table)")
    lm: QuantizeLMConfig | None = Field(None, description="task causal-lm only (filled in for it): int8 / int4 modes "
                                        "and the perplexity-drift gate")

    # Dumps (and cache keys) stay as they were before `lm` and `embedding_bits` existed.
    _omit_if = {"lm": None, "embedding_bits": 8}

    def key_extras(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """int4 files are written by onnxruntime's MatMulNBits quantizer through onnx-ir."""
        return ((), ("onnx-ir",)) if self.lm is not None and "int4" in self.lm.modes else ((), ())

    def task_problem(self, pipeline) -> str | None:
        if pipeline.task == "causal-lm":
            wrong = [f for f in ("modes", "preset", "calibration_method", "calibration_examples", "compare_calibration",
                                 "guard", "embedding_bits") if f in self.model_fields_set]
            if wrong:
                return (f"{', '.join(wrong)} apply to text-classification only; a causal-lm quantize takes models and "
                        "lm: {modes: [dynamic, int4], block_size, accuracy_level, windows, max_perplexity_ratio}")
        elif self.lm is not None:
            return "lm applies to task causal-lm only"
        return None

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
            if "perplexity" in v["validation"]:  # a causal LM
                return (f"{name}: validation perplexity {v['validation']['perplexity']:.3g} "
                        f"(x{v['validation']['perplexity_ratio']:.2f} fp32), {v['out_bytes'] / 1e6:.1f} MB")
            text = f"{name}: validation {100 * v['validation']['accuracy']:.2f}%, {v['file_bytes'] / 1e6:.1f} MB"
            if v.get("calibration_picked"):
                text += f", calibration {v['calibration_picked']} (picked on validation)"
            if v.get("guard"):
                text += f", {len(v['guard']['excluded'])} node(s) kept float"
            if v.get("embedding_bits") == 4:
                text += ", 4-bit word embeddings"
            return text

        return "; ".join(one(k, v) for k, v in m.items())

    def requires(self) -> list[str]:
        return [f"{m}.onnx" for m in self.models]

    def provides(self) -> list[str]:
        modes = self.lm.modes if self.lm is not None else self.modes
        return [f"{m}.{'int4' if mode == 'int4' else 'int8-' + mode}.onnx" for m in self.models for mode in modes]
