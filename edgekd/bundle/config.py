from typing import Literal

from pydantic import Field

from edgekd._config_base import StrictModel


class BundleConfig(StrictModel):
    """A deployable folder: one ONNX model, tokenizer.json, label names and a manifest."""

    kind: Literal["bundle"] = "bundle"
    model: str = Field(
        "student.int8-dynamic.onnx", description="ONNX artifact to ship (any output of export or quantize)"
    )

    @staticmethod
    def summary(m: dict) -> str:
        return f"{m.get('source')}, {m.get('bundle_bytes', 0) / 1e6:.1f} MB"

    def requires(self) -> list[str]:
        return [self.model]

    def provides(self) -> list[str]:
        return ["bundle"]
