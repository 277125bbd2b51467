"""Configs of the bundle stage: one deployable folder, and for causal LMs the quality gate and the optional
ONNX Runtime GenAI build of the same model (the format on-device apps load with og.Model)."""

from typing import Literal

from pydantic import Field

from edgekd._config_base import StrictModel


class BundleLMConfig(StrictModel):
    """The quality gate of a language-model bundle: the shipped file against the teacher, same validation windows."""

    max_perplexity_ratio: float = Field(1.5, gt=1.0, description="refuse to bundle a model whose validation "
                                        "perplexity exceeds this multiple of the teacher's")
    allow_over_ratio: bool = Field(False, description="bundle it anyway (the report still flags it)")
    max_new_tokens: int = Field(128, ge=1, le=65_536, description="default generation length written to "
                                "generation.json")
    genai: Literal["int4", "fp32"] | None = Field(
        None, description="also build the bundled model's Hugging Face source with ONNX Runtime GenAI's model "
        "builder at this precision, into bundle.genai-<precision>, under the same quality gate")

    _omit_if = {"genai": None}  # LM bundles configured before `genai` existed keep their cache keys


def lm_genai_artifact(precision: str) -> str:
    """The GenAI bundle's artifact (and folder) name."""
    return f"bundle.genai-{precision}"


class BundleConfig(StrictModel):
    """A deployable folder: one ONNX model, tokenizer.json, label names and a manifest."""

    kind: Literal["bundle"] = "bundle"
    model: str = Field(
        "student.int8-dynamic.onnx", description="ONNX artifact to ship (any output of export or quantize)"
    )

    lm: BundleLMConfig | None = Field(None, description="task causal-lm only (filled in for it): the generation "
                                      "bundle's quality gate")

    _omit_if = {"lm": None}  # classification dumps (and cache keys) stay as they were before `lm` existed

    def key_extras(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """A language-model bundle's gate scores the shipped file with onnxruntime on tokenised text."""
        if self.lm is None:
            return (), ()
        genai = ("onnxruntime-genai",) if self.lm.genai else ()  # its builder wrote the GenAI bundle's files
        return (), ("onnxruntime", "tokenizers", "transformers", *genai)

    def task_problem(self, pipeline) -> str | None:
        if pipeline.task != "causal-lm" and self.lm is not None:
            return "lm applies to task causal-lm only"
        return None

    @staticmethod
    def summary(m: dict) -> str:
        line = f"{m.get('source')}, {m.get('bundle_bytes', 0) / 1e6:.1f} MB"
        mobile = [f"{runtime} {m[f'{runtime}_bytes'] / 1e6:.1f} MB" for runtime in ("ort", "litert", "executorch")
                  if f"{runtime}_bytes" in m]
        if mobile:
            line += f" (with files of the same precision for {', '.join(mobile)})"
        gate = m.get("quality_gate")
        if gate:
            verdict = "over the limit, bundled anyway" if gate["over"] else "within the limit"
            line += (f"; validation perplexity {gate['perplexity']:.4g} = {gate['ratio']:.2f}x the teacher's "
                     f"(limit {gate['limit']}x, {verdict})")
        genai = m.get("genai")
        if genai:
            line += (f"; ONNX Runtime GenAI {genai['precision']} build {genai['file_bytes'] / 1e6:.1f} MB, validation "
                     f"perplexity {genai['quality_gate']['perplexity']:.4g} = {genai['quality_gate']['ratio']:.2f}x "
                     "the teacher's")
        return line

    def requires(self) -> list[str]:
        return [self.model]

    def provides(self) -> list[str]:
        genai = self.lm.genai if self.lm is not None else None
        return ["bundle", lm_genai_artifact(genai)] if genai else ["bundle"]
