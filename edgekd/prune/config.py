from typing import Literal

from pydantic import Field, model_validator

from edgekd._config_base import StrictModel


class PruneConfig(StrictModel):
    """Structured pruning of the teacher: whole heads, FFN channels, hidden width and whole layers."""

    kind: Literal["prune"] = "prune"
    importance: Literal["taylor", "magnitude"] = Field("taylor", description="how channels and heads are ranked")
    head_ratio: float = Field(0.5, ge=0.0, lt=1.0, description="share of attention heads removed in every layer")
    ffn_ratio: float = Field(0.5, ge=0.0, lt=1.0, description="share of FFN channels removed in every layer")
    hidden_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="share of the hidden width removed (all layers)")
    layer_ratio: float = Field(0.5, ge=0.0, lt=1.0, description="share of layers dropped, evenly spaced (first and last kept)")
    keep_layers: list[int] | None = Field(None, description="explicit layer indices to keep; overrides layer_ratio")
    calibration_batches: int = Field(8, ge=1, le=1000, description="train batches used to rank channels (Taylor)")
    calibration_batch_size: int = Field(32, ge=1, le=1024, description="examples per calibration batch")

    @model_validator(mode="after")
    def _keep_layers_valid(self) -> "PruneConfig":
        if self.keep_layers is not None:
            if not self.keep_layers:
                raise ValueError("keep_layers must name at least one layer")
            if len(set(self.keep_layers)) != len(self.keep_layers) or min(self.keep_layers) < 0:
                raise ValueError("keep_layers must be distinct, non-negative layer indices")
        return self

    @staticmethod
    def summary(m: dict) -> str:
        return (f"{m['parameters_before'] / 1e6:.2f}M → {m['parameters_after'] / 1e6:.2f}M parameters; layers "
                f"{m['kept_layers']}, heads {m['layout']['heads']}, FFN {m['layout']['ffn']}; validation accuracy "
                f"before distillation {100 * m['validation']['accuracy']:.2f}%")

    def requires(self) -> list[str]:
        return ["teacher"]

    def provides(self) -> list[str]:
        return ["pruned"]
