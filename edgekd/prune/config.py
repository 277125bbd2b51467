from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgekd._config_base import StrictModel

# The prune fields a target replaces: the target's search picks them.
TARGET_REPLACES = ("head_ratio", "ffn_ratio", "hidden_ratio", "layer_ratio", "keep_layers")


def _ratios_valid(ratios: list[float]) -> list[float]:
    if any(not 0.0 <= r < 1.0 for r in ratios) or len(set(ratios)) != len(ratios):
        raise ValueError("ratios must be distinct shares removed, each in [0, 1), e.g. [0.0, 0.25, 0.5]")
    return ratios


class ShapeCandidates(StrictModel):
    """The student shapes a latency target chooses from: every combination of these."""

    layers: list[int] | None = Field(None, min_length=1, description="layer counts to try (None: 1 to the "
                                     "teacher's layer count)")
    head_ratios: list[float] = Field([0.0, 0.25, 0.5, 0.75], min_length=1, description="head_ratio values to try")
    ffn_ratios: list[float] = Field([0.0, 0.25, 0.5, 0.75], min_length=1, description="ffn_ratio values to try")
    hidden_ratios: list[float] = Field([0.0, 0.25], min_length=1, description="hidden_ratio values to try")

    @field_validator("layers")
    @classmethod
    def _layers_valid(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (min(v) < 1 or len(set(v)) != len(v)):
            raise ValueError("layers must be distinct layer counts >= 1, e.g. [2, 3, 4]")
        return v

    _head_ratios_valid = field_validator("head_ratios", "ffn_ratios", "hidden_ratios")(_ratios_valid)


class PruneTarget(StrictModel):
    """A latency budget instead of ratios: the largest candidate shape whose int8 ONNX Runtime latency,
    measured on this machine (batch 1), meets it. Exactly one of latency_ms and speedup."""

    latency_ms: float | None = Field(None, gt=0.0, description="budget per batch-1 call of the int8 student, in ms")
    speedup: float | None = Field(None, gt=1.0, description="budget as a speed-up over the fp32 ONNX teacher "
                                  "timed the same way")
    threads: int = Field(1, ge=0, le=256, description="ONNX Runtime intra-op threads (0: all physical cores); "
                         "match the bench setting the budget is meant for")
    sequence_length: int | None = Field(None, ge=1, le=4096, description="token length of the timed inputs (None: "
                                        "the median train text length, so the prediction compares with the bench's "
                                        "real-text batch-1 median)")
    repeats: int = Field(30, ge=1, le=10_000, description="timed calls per candidate; the median is kept")
    warmup: int = Field(5, ge=0, le=10_000, description="untimed calls per candidate before timing")
    preset: Literal["avx2", "avx512_vnni", "arm64"] = Field("avx2", description="int8 preset the candidates are "
                                                            "quantized with (dynamic, as the quantize stage does)")
    candidates: ShapeCandidates = Field(default_factory=ShapeCandidates, description="the shapes searched")

    @model_validator(mode="after")
    def _one_budget(self) -> "PruneTarget":
        if (self.latency_ms is None) == (self.speedup is None):
            raise ValueError("set exactly one of latency_ms (ms per call) or speedup (over the fp32 teacher)")
        return self


class LowRankConfig(StrictModel):
    """Truncated-SVD factorisation of encoder Linears after pruning (edgekd.prune.lowrank): W [out, in] becomes
    in -> r -> out wherever r * (in + out) < in * out. Exactly one of rank and energy."""

    include: list[Literal["ffn_in", "ffn_out", "out"]] = Field(
        ["ffn_in", "ffn_out"], min_length=1, description="Linears factorised in every layer: ffn_in (FFN up), "
        "ffn_out (FFN down), out (attention output)")
    rank: int | None = Field(None, ge=1, le=65_536, description="fixed rank (rounded up to multiple_of)")
    energy: float | None = Field(None, gt=0.0, le=1.0, description="smallest rank keeping this share of the "
                                 "squared singular values, per matrix (rounded up to multiple_of)")
    multiple_of: int = Field(8, ge=1, le=256, description="ranks are rounded up to a multiple of this (CPU kernels)")

    @model_validator(mode="after")
    def _rank_or_energy(self) -> "LowRankConfig":
        if (self.rank is None) == (self.energy is None):
            raise ValueError("set exactly one of rank (fixed) or energy (share of squared singular values kept)")
        return self


def _budget_note(budget: dict | None) -> str:
    if not budget:
        return ""
    return (f"; shape picked for a latency target: predicted {budget['predicted_latency_ms']:.3f} ms int8 "
            f"({budget['predicted_speedup']:.2f}x the fp32 teacher) at {budget['threads']} thread(s), length "
            f"{budget['sequence_length']}, budget {budget['budget_ms']:.3f} ms")


class PruneConfig(StrictModel):
    """Structured pruning of the teacher: whole heads, FFN channels, hidden width and whole layers."""

    kind: Literal["prune"] = "prune"
    importance: Literal["taylor", "magnitude", "activation"] = Field(
        "taylor", description="how heads, FFN channels and hidden channels are ranked: taylor (|weight x gradient| of "
        "the CE on the calibration batches), magnitude (L2 norm of the weights), activation (Minitron: mean "
        "magnitude of each head's context slice, FFN activation and LayerNorm output over non-pad calibration tokens)")
    head_ratio: float = Field(0.5, ge=0.0, lt=1.0, description="share of attention heads removed in every layer")
    ffn_ratio: float = Field(0.5, ge=0.0, lt=1.0, description="share of FFN channels removed in every layer")
    hidden_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="share of the hidden width removed (all layers)")
    layer_ratio: float = Field(0.5, ge=0.0, lt=1.0, description="share of layers dropped (round(layers x (1 - "
                               "ratio)) kept, at least one); which ones: layer_selection")
    layer_selection: Literal["even", "block_influence", "skip_loss"] = Field(
        "even", description="which layers layer_ratio drops: even (evenly spaced, first and last kept), "
        "block_influence (ShortGPT: lowest 1 - cos(layer input, output) over calibration tokens), skip_loss "
        "(lowest KL of the full model's class distribution vs the model with that layer skipped)")
    skip_loss_greedy: bool = Field(False, description="skip_loss only: drop the cheapest layer, re-measure the rest "
                                   "on the shortened model, repeat (one measuring round per dropped layer)")
    keep_layers: list[int] | None = Field(None, description="explicit layer indices to keep; overrides layer_ratio "
                                          "and layer_selection")
    multiple_of: int = Field(1, ge=1, le=4096, description="round the kept FFN width and hidden width to the nearest "
                             "multiple of this (at least one multiple, at most the full width), e.g. 32 or 64 for "
                             "CPU kernels; head counts are not rounded")
    calibration_batches: int = Field(8, ge=1, le=1000, description="train batches used to rank channels (taylor, "
                                     "activation) and layers (block_influence, skip_loss)")
    calibration_batch_size: int = Field(32, ge=1, le=1024, description="examples per calibration batch")
    target: PruneTarget | None = Field(None, description="latency budget that picks head/FFN/hidden/layer ratios "
                                       "by timing candidate shapes on this machine; exclusive with those ratios")
    low_rank: LowRankConfig | None = Field(None, description="factorise Linears by truncated SVD after pruning "
                                           "(before distillation); none: keep them full rank")

    @model_validator(mode="after")
    def _keep_layers_valid(self) -> "PruneConfig":
        if self.keep_layers is not None:
            if not self.keep_layers:
                raise ValueError("keep_layers must name at least one layer")
            if len(set(self.keep_layers)) != len(self.keep_layers) or min(self.keep_layers) < 0:
                raise ValueError("keep_layers must be distinct, non-negative layer indices")
        return self

    @model_validator(mode="after")
    def _greedy_needs_skip_loss(self) -> "PruneConfig":
        if self.skip_loss_greedy and self.layer_selection != "skip_loss":
            raise ValueError(f"skip_loss_greedy: true applies only to layer_selection: skip_loss "
                             f"(got layer_selection: {self.layer_selection})")
        return self

    @model_validator(mode="after")
    def _target_or_ratios(self) -> "PruneConfig":
        # Only fields written by the user count: a target replaces the ratios' defaults, not their choices.
        given = [name for name in TARGET_REPLACES if name in self.model_fields_set]
        if self.target is not None and given:
            raise ValueError(f"target and {', '.join(given)} are exclusive: the target picks "
                             f"{', '.join(given)}; remove one")
        return self

    def task_problem(self, pipeline) -> str | None:
        """Causal LMs keep their width (hidden pruning, low rank and latency targets are encoder-only so far)."""
        if pipeline.task != "causal-lm":
            return None
        wrong = [f for f in ("hidden_ratio", "target", "low_rank", "skip_loss_greedy") if f in self.model_fields_set]
        if self.importance == "activation":
            wrong.append("importance: activation")
        if wrong:
            return (f"{', '.join(wrong)} apply to text-classification only; a causal-lm prune takes layer_ratio or "
                    "keep_layers, layer_selection (block_influence, skip_loss = perplexity change, even), head_ratio "
                    "(whole KV groups), ffn_ratio, importance (taylor, magnitude), multiple_of")
        return None

    @staticmethod
    def summary(m: dict) -> str:
        if "perplexity" in m["validation"]:  # a causal LM
            return (f"{m['parameters_before'] / 1e6:.2f}M → {m['parameters_after'] / 1e6:.2f}M parameters; layers "
                    f"{m['kept_layers']} ({m['layer_method'] or 'given'}), heads {m['heads_after']} / KV heads "
                    f"{m['kv_heads_after']}, FFN {m['ffn_after']}; validation perplexity before distillation "
                    f"{m['validation']['perplexity']:.4g}")
        selection = m.get("layer_selection") or {}
        why = ""
        if selection.get("scores"):
            why = f" ({selection['method']} scores {', '.join(f'{s:.3g}' for s in selection['scores'])})"
        return (f"{m['parameters_before'] / 1e6:.2f}M → {m['parameters_after'] / 1e6:.2f}M parameters; layers "
                f"{m['kept_layers']}{why}, heads {m['layout']['heads']}, FFN {m['layout']['ffn']}; validation "
                f"accuracy before distillation {100 * m['validation']['accuracy']:.2f}%" + _budget_note(m.get("budget")))

    def key_extras(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(pipeline settings, libraries) the cache key covers beyond the prune entry's own: a latency
        target's choice depends on this machine and on the runtime it times candidates with."""
        if self.target is None:
            return (), ()
        return ("machine",), ("onnx", "onnxruntime")

    def requires(self) -> list[str]:
        return ["teacher"]

    def provides(self) -> list[str]:
        return ["pruned"]
