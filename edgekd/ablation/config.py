from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgekd._config_base import StrictModel

HARD_LABELS = "hard-labels"  # the variant trained on hard-label cross-entropy only
NO_EXTRA_DATA = "no-extra-data"  # the distilled student without the teacher-labelled extra text


def variant_name(term: str) -> str:
    """Name of the variant with one distillation loss term switched off: 'beta' -> 'no-beta'."""
    return f"no-{term}"


def artifact_name(variant: str) -> str:
    return f"student-{variant}"


def loss_terms() -> dict[str, str]:
    """The distill stage's loss weights that can be switched off, read from DistillConfig's fields as they
    are now (name -> description): every field described as the "weight of" a term (alpha, beta, gamma...)."""
    from edgekd.distill.config import DistillConfig

    return {name: field.description for name, field in DistillConfig.model_fields.items()
            if (field.description or "").startswith("weight of")}


class AblationConfig(StrictModel):
    """Does distillation help? The pruned student (the same starting weights the distilled student
    started from) trained again without it, to compare on the test split in the bench and report.

    This stage mirrors the distill stage: the training budget (epochs, batch size, learning rate,
    weight decay, warm-up, early stopping on validation, max steps, device) and the other loss settings
    are read from the distill stage's manifest in this run, never repeated here, so both students get
    the same budget and the same seed. Each variant is a full training run.
    """

    kind: Literal["ablation"] = "ablation"
    hard_labels: bool = Field(True, description="train the non-distilled student: hard-label cross-entropy only, "
                              "every distillation loss weight at 0 and no teacher-labelled extra text")
    drop_terms: list[str] = Field([], max_length=8, description="extra variants, each the distill stage's loss with "
                                  "one term's weight set to 0, named after DistillConfig's weight fields (alpha: "
                                  "soft targets off, beta: hidden states off, gamma: attention maps off)")

    extra_data: bool = Field(False, description="also train the distilled student without the distill stage's "
                             "teacher-labelled extra text (same loss): what that text adds")

    @field_validator("drop_terms")
    @classmethod
    def _terms_exist(cls, v: list[str]) -> list[str]:
        allowed = loss_terms()
        unknown = [t for t in v if t not in allowed]
        if unknown:
            raise ValueError(f"unknown loss term {unknown[0]!r}; allowed: {', '.join(allowed)}")
        if len(set(v)) != len(v):
            raise ValueError("each loss term may be dropped once")
        return v

    @model_validator(mode="after")
    def _something_to_train(self) -> "AblationConfig":
        if not self.hard_labels and not self.drop_terms and not self.extra_data:
            raise ValueError("nothing to train: set hard_labels: true or extra_data: true, or name at least one "
                             "of drop_terms")
        return self

    def task_problem(self, pipeline) -> str | None:
        if pipeline.task == "causal-lm" and (self.drop_terms or self.extra_data):
            return ("drop_terms and extra_data apply to text-classification only; a causal-lm ablation trains the "
                    "non-distilled student (hard_labels: next-token cross-entropy, the same steps and tokens)")
        return None

    @staticmethod
    def summary(m: dict) -> str:
        variants = m.get("variants", {})
        if "distilled_validation_perplexity" in m:  # a causal LM
            parts = [f"{name}: validation perplexity {v['validation']['perplexity']:.4g}" for name, v in variants.items()]
            return "; ".join(parts + [f"distilled {m['distilled_validation_perplexity']:.4g}"]) + \
                f" (same steps as the distill stage: {m.get('steps')})"
        parts = [f"{name}: validation accuracy {100 * v['validation']['accuracy']:.2f}%"
                 for name, v in variants.items()]
        if "distilled_validation_accuracy" in m:
            parts.append(f"distilled {100 * m['distilled_validation_accuracy']:.2f}%")
        return "; ".join(parts) + f" (budget of the distill stage: {m.get('budget', {}).get('epochs')} epoch(s))"

    def variants(self) -> list[str]:
        return ([HARD_LABELS] if self.hard_labels else []) + [variant_name(t) for t in self.drop_terms] + \
            ([NO_EXTRA_DATA] if self.extra_data else [])

    def requires(self) -> list[str]:
        return ["teacher", "pruned", "student"]

    def provides(self) -> list[str]:
        return [artifact_name(v) for v in self.variants()]
