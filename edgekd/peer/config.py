from typing import Literal

from pydantic import Field

from edgekd._config_base import StrictModel

PEER_ARTIFACT = "peer.int8-dynamic.onnx"


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

    @staticmethod
    def summary(m: dict) -> str:
        p = m.get("peer")
        if not p:
            return ""
        fix = f"quantizer fix: {p['fix']}" if p.get("fix") else "no quantizer fix needed"
        return (f"{p['preset']}, level {p['optimization_level']}: validation {100 * p['validation']['accuracy']:.2f}%, "
                f"{p['file_bytes'] / 1e6:.1f} MB (optimised fp32 {p['optimized_bytes'] / 1e6:.1f} MB); {fix}")

    def key_extras(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Level 99 adds layouts for this machine's CPU: then the cache key covers the machine too."""
        return (("machine",), ()) if self.optimization_level == 99 else ((), ())

    def requires(self) -> list[str]:
        return [self.model]

    def provides(self) -> list[str]:
        return [PEER_ARTIFACT]
