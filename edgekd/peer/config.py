from typing import Literal

from pydantic import Field

from edgekd._config_base import StrictModel

PEER_ARTIFACT = "peer.int8-dynamic.onnx"


class PeerLMConfig(StrictModel):
    """Causal LMs: what a user would do instead of edgekd: ONNX Runtime GenAI's model builder on the teacher."""

    precision: Literal["int4", "fp32"] = Field("int4", description="the builder's precision (int4: MatMulNBits, "
                                               "the tied embedding / lm_head quantized once)")


def lm_peer_artifact(precision: str) -> str:
    return f"peer.genai-{precision}"


class PeerConfig(StrictModel):
    """The standard optimum route applied to the fine-tuned teacher, kept as a measured baseline:
    optimum's ONNX export, ``ORTOptimizer`` and ``ORTQuantizer`` with a dynamic int8 preset."""

    kind: Literal["peer"] = "peer"
    model: str = Field("teacher", min_length=1, description="the hf-model artifact (stage output) taken down the "
                       "peer path; the fine-tuned teacher is the comparison users would make")
    optimization_level: Literal[0, 1, 2, 99] = Field(
        2, description="optimum OptimizationConfig.optimization_level: 0 off, 1 basic, 2 extended (with transformer "
                       "fusions, as AutoOptimizationConfig.O2), 99 all, hardware-specific layouts included")
    preset: Literal["avx2", "avx512_vnni", "arm64"] = Field(
        "avx2", description="optimum AutoQuantizationConfig preset: avx2 (x86 without VNNI), avx512_vnni, arm64")
    per_channel: bool = Field(False, description="per-channel weight scales (False: one scale per tensor, the "
                              "setting optimum's quickstart uses)")

    lm: PeerLMConfig | None = Field(None, description="task causal-lm only (filled in for it): the ONNX Runtime GenAI "
                                    "peer")

    _omit_if = {"lm": None}  # classification dumps (and cache keys) stay as they were before `lm` existed

    def task_problem(self, pipeline) -> str | None:
        if pipeline.task == "causal-lm":
            wrong = [f for f in ("optimization_level", "preset", "per_channel") if f in self.model_fields_set]
            if wrong:
                return (f"{', '.join(wrong)} apply to text-classification only (optimum's int8 path); a causal-lm "
                        "peer is ONNX Runtime GenAI's model builder: lm: {precision}")
        elif self.lm is not None:
            return "lm applies to task causal-lm only"
        return None

    @staticmethod
    def summary(m: dict) -> str:
        p = m.get("peer")
        if not p:
            return ""
        if "perplexity" in p.get("validation", {}):  # the ONNX Runtime GenAI peer of a causal LM
            return (f"ONNX Runtime GenAI model builder, {p['precision']}: validation perplexity "
                    f"{p['validation']['perplexity']:.4g}, {p['file_bytes'] / 1e6:.1f} MB, built in {p['seconds']:.0f} s")
        fix = f"quantizer fix: {p['fix']}" if p.get("fix") else "no quantizer fix needed"
        return (f"{p['preset']}, level {p['optimization_level']}: validation {100 * p['validation']['accuracy']:.2f}%, "
                f"{p['file_bytes'] / 1e6:.1f} MB (optimised fp32 {p['optimized_bytes'] / 1e6:.1f} MB); {fix}")

    def key_extras(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Level 99 adds layouts for this machine's CPU: then the cache key covers the machine too. The GenAI
        peer's files come from onnxruntime-genai's builder."""
        if self.lm is not None:
            return ((), ("onnxruntime-genai",))
        return (("machine",), ()) if self.optimization_level == 99 else ((), ())

    def requires(self) -> list[str]:
        return [self.model]

    def provides(self) -> list[str]:
        return [lm_peer_artifact(self.lm.precision)] if self.lm is not None else [PEER_ARTIFACT]
