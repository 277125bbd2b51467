from typing import Literal

from pydantic import Field, model_validator

from edgekd._config_base import StrictModel
from edgekd._train_config import TrainingFields


class ExtraDataConfig(StrictModel):
    """Training text beyond the labelled split, labelled by the teacher with soft targets only.

    Extra examples join the labelled ones in shuffled, mixed batches; their loss is
    ``weight * T^2 * KL(teacher || student)`` (no CE: they have no gold label), a labelled example's
    is the usual alpha-weighted KL + CE, and a batch averages over all its examples.
    """

    unlabelled: bool = Field(False, description="add the data step's unlabelled pool (data.unlabelled_labels)")
    augment_copies: int = Field(0, ge=0, le=32, description="augmented variants per training sentence (0: off)")
    augment_method: Literal["neighbours", "mask", "both"] = Field(
        "neighbours", description="neighbours: swap whole words for one of their nearest teacher-embedding "
        "neighbours; mask: replace tokens with the mask (or unknown) token; both: each chosen word gets either"
    )
    augment_fraction: float = Field(0.15, gt=0.0, le=1.0, description="share of a sentence's words changed per variant")
    neighbours: int = Field(8, ge=1, le=256, description="k nearest embedding neighbours (cosine) a word may become")
    max_extra: int | None = Field(None, ge=1, description="cap on extra examples, unlabelled first (None: all)")
    weight: float = Field(1.0, gt=0.0, le=100.0, description="weight of an extra example's soft loss (1: as much as a "
                          "labelled example's whole loss)")

    @property
    def enabled(self) -> bool:
        return self.unlabelled or self.augment_copies > 0


class GeneratedTextConfig(StrictModel):
    """Sequence-level KD data for a causal LM: the teacher continues the start of training windows."""

    sequences: int = Field(0, ge=0, le=1_000_000, description="teacher-written windows added to training (0: off)")
    prompt_tokens: int = Field(32, ge=1, le=4096, description="tokens of a training window the teacher continues; "
                               "it writes the rest of the window (model.max_length - prompt_tokens tokens)")
    do_sample: bool = Field(True, description="sample the continuation (False: greedy)")
    temperature: float = Field(0.8, gt=0.0, le=10.0, description="sampling temperature")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="nucleus sampling mass")


class LMDistillConfig(StrictModel):
    """Causal-LM distillation: alpha * KD(loss) + (1 - alpha) * next-token CE, per counted token."""

    loss: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        "forward_kl", description="forward_kl: KL(teacher || student) (mode-covering); reverse_kl: KL(student || "
        "teacher) (mode-seeking, MiniLLM); jsd: generalised Jensen-Shannon with jsd_beta (GKD)")
    jsd_beta: float = Field(0.5, ge=0.0, le=1.0, description="jsd only: 0 = forward KL, 1 = reverse KL")
    teacher_logits: Literal["online", "topk"] = Field(
        "online", description="online: the teacher runs on every batch (full distribution); topk: its top-k logits "
        "per token are computed once before training and reused every epoch (forward_kl only)")
    topk: int = Field(64, ge=1, le=65_536, description="tokens kept per position when teacher_logits is topk")
    generated: GeneratedTextConfig = Field(default_factory=GeneratedTextConfig,
                                           description="teacher-written training text (sequence-level KD; off by "
                                                       "default)")

    @model_validator(mode="after")
    def _topk_is_forward_kl(self) -> "LMDistillConfig":
        if self.teacher_logits == "topk" and self.loss != "forward_kl":
            raise ValueError(f"teacher_logits topk works with loss forward_kl only (got {self.loss}): the other losses "
                             "need the teacher's whole distribution")
        return self


# Fields that only mean something for an encoder classifier (hidden states, attention maps, [CLS], labels).
CLASSIFIER_ONLY = ("beta", "gamma", "layer_map", "temperature_schedule", "temperature_end", "relation_weight",
                   "relation_heads", "relations", "relation_layers", "contrastive_weight", "contrastive_temperature",
                   "extra_data")


class DistillConfig(TrainingFields):
    """Knowledge distillation from the fine-tuned teacher into the pruned student.

    loss = alpha * T_k^2 * KL(softmax(z_t / T_k) || softmax(z_s / T_k)) + (1 - alpha) * CE(z_s, y)
         + beta  * mean over layer_map (s -> t) of masked MSE(P_s(h_s), h_t)
         + gamma * mean over layer_map (s -> t) of KL(head-mean attn_t || head-mean attn_s), per query row
         + relation_weight * mean over relation_layers (s -> t) and relations (qq, kk, vv) of
               KL(softmax(X_t,r X_t,r^T / sqrt(d_t)) || softmax(X_s,r X_s,r^T / sqrt(d_s))), per query row
         + contrastive_weight * InfoNCE(P_c(cls_s), cls_t; contrastive_temperature)

    z: logits; y: labels; h: layer outputs [B, S, H]; attn: attention maps [B, heads, S, S]. Every
    per-token term averages over real (non-pad) positions only.
    - Temperature: T_k goes from ``temperature`` to ``temperature_end`` over the run's optimisation
      steps k as ``temperature_schedule`` says (constant: T_k = temperature).
    - Intermediate layers (beta, gamma): ``layer_map`` pairs student and teacher layer outputs; P_s is
      a learned Linear per mapped layer from the student to the teacher width (identity when equal),
      trained with the student. Default map: the teacher layer each student layer was pruned from.
    - Relations (MiniLM / MiniLMv2): X is a layer's queries, keys or values read from its q/k/v
      Linears, [B, S, A] with A = heads * head_dim, re-split into ``relation_heads`` heads r for both
      models (d = A / relation_heads), so a student with fewer heads still compares head for head.
    - Contrastive: cls = first-token final hidden state; P_c is a learned Linear to the teacher width;
      the other examples of the batch are the negatives.
    The teacher runs once per batch, in eval mode under no_grad, and only when beta, gamma,
    relation_weight or contrastive_weight is above 0 (its logits are cached once before training).
    """

    _omit_if = {"lm": None}  # classification dumps (and cache keys) stay as they were before `lm` existed
    kind: Literal["distill"] = "distill"
    epochs: int = Field(3, ge=1, le=100, description="maximum epochs over the training split")
    temperature: float = Field(2.0, gt=0.0, le=20.0, description="softmax temperature T of the soft targets")
    alpha: float = Field(0.7, ge=0.0, le=1.0, description="weight of the soft-target KL term (1 - alpha: hard CE)")
    beta: float = Field(0.0, ge=0.0, le=100.0, description="weight of the hidden-state MSE term (0: off)")
    gamma: float = Field(0.0, ge=0.0, le=100.0, description="weight of the attention-map term (0: off)")
    layer_map: dict[int, int] | None = Field(
        None, description="student layer -> teacher layer for hidden/attention terms; default: the layer each student "
        "layer was pruned from"
    )
    temperature_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="how T moves from temperature (first step) to temperature_end (last step)"
    )
    temperature_end: float | None = Field(
        None, gt=0.0, le=20.0, description="T at the last step of a linear/cosine schedule (None: = temperature)"
    )
    relation_weight: float = Field(
        0.0, ge=0.0, le=100.0, description="weight of the MiniLM Q/K/V self-attention relation term (0: off)"
    )
    relation_heads: int = Field(
        12, ge=1, le=1024, description="relation heads both models' attention widths are re-split into; must divide "
        "the student's and the teacher's heads * head_dim"
    )
    relations: list[Literal["qq", "kk", "vv"]] = Field(
        default_factory=lambda: ["qq", "kk", "vv"], min_length=1, max_length=3,
        description="relations compared: query-query, key-key, value-value"
    )
    relation_layers: dict[int, int] | None = Field(
        None, description="student layer -> teacher layer for the relation term; default: last -> last"
    )
    contrastive_weight: float = Field(
        0.0, ge=0.0, le=100.0, description="weight of the [CLS] InfoNCE term between student and teacher (0: off)"
    )
    contrastive_temperature: float = Field(
        0.1, gt=0.0, le=10.0, description="temperature of the InfoNCE similarities"
    )
    lm: LMDistillConfig | None = Field(None, description="task causal-lm only: the KD loss, online or top-k teacher "
                                       "logits, teacher-written text (None: the defaults)")
    extra_data: ExtraDataConfig = Field(
        default_factory=ExtraDataConfig, description="teacher-labelled extra text: the unlabelled pool and "
        "augmented training sentences (off by default)"
    )

    @model_validator(mode="after")
    def _consistent_terms(self) -> "DistillConfig":
        if len(set(self.relations)) != len(self.relations):
            raise ValueError(f"relations: {self.relations} repeats an entry; allowed: qq, kk, vv, each once")
        if self.temperature_schedule == "constant" and self.temperature_end not in (None, self.temperature):
            raise ValueError("temperature_end is only used by temperature_schedule linear or cosine")
        return self

    def task_problem(self, pipeline) -> str | None:
        """Why this config does not fit the pipeline (its task family, its window length), or None."""
        if pipeline.task == "causal-lm":
            generated = self.lm_settings().generated
            if generated.sequences and generated.prompt_tokens >= pipeline.model.max_length:
                return (f"lm.generated.prompt_tokens: {generated.prompt_tokens} leaves no room to write in a window "
                        f"of model.max_length {pipeline.model.max_length} tokens; use fewer")
            wrong = [name for name in CLASSIFIER_ONLY if name in self.model_fields_set]
            if wrong:
                return (f"{', '.join(wrong)} apply to text-classification only; a causal-lm distill takes temperature, "
                        "alpha and lm: {loss, teacher_logits, topk, generated}")
        elif self.lm is not None:
            return "lm applies to task causal-lm only"
        return None

    def lm_settings(self) -> LMDistillConfig:
        return self.lm or LMDistillConfig()

    @property
    def final_temperature(self) -> float:
        return self.temperature if self.temperature_end is None else self.temperature_end

    @staticmethod
    def summary(m: dict) -> str:
        extra = (m.get("extra_data") or {}).get("total")
        note = f", {extra} teacher-labelled extra examples" if extra else ""
        if "perplexity" in m["validation"]:
            generated = (m.get("generated") or {}).get("sequences")
            note = f", {generated} teacher-written windows" if generated else ""
            return (f"{m.get('epochs_run')} epoch(s), best {m.get('best_epoch')}, validation perplexity "
                    f"{m['validation']['perplexity']:.2f}{note}")
        return (f"{m.get('epochs_run')} epoch(s), best {m.get('best_epoch')}, validation accuracy "
                f"{100 * m['validation']['accuracy']:.2f}%{note}")

    def requires(self) -> list[str]:
        return ["teacher", "pruned"]

    def provides(self) -> list[str]:
        return ["student"]
