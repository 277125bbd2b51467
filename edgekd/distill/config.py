from typing import Literal

from pydantic import Field

from edgekd._train_config import TrainingFields


class DistillConfig(TrainingFields):
    """Knowledge distillation from the fine-tuned teacher into the pruned student.

    loss = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)
         + beta * MSE(proj(h_s), h_t) over the layer map + gamma * attention-map KL over the layer map
    """

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

    @staticmethod
    def summary(m: dict) -> str:
        return (f"{m.get('epochs_run')} epoch(s), best {m.get('best_epoch')}, validation accuracy "
                f"{100 * m['validation']['accuracy']:.2f}%")

    def requires(self) -> list[str]:
        return ["teacher", "pruned"]

    def provides(self) -> list[str]:
        return ["student"]
