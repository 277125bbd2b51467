from typing import Literal

from pydantic import Field

from edgekd._train_config import TrainingFields


class TeacherConfig(TrainingFields):
    """Fine-tune the pipeline's model on the task; it becomes the teacher of every later stage."""

    kind: Literal["teacher"] = "teacher"
    finetune: bool = Field(True, description="false: use the model as given (it must already have the task's head)")

    @staticmethod
    def summary(m: dict) -> str:
        """One line for the report's pipeline table, from this stage's manifest metrics."""
        if "perplexity" in m["validation"]:  # a causal LM
            return (f"{m.get('device', 'as given')}, {m.get('steps', 0)} steps, validation perplexity "
                    f"{m['validation']['perplexity']:.4g}")
        return (f"{m.get('device', 'as given')}, {m.get('epochs_run', 0)} epoch(s), validation accuracy "
                f"{100 * m['validation']['accuracy']:.2f}%")

    def requires(self) -> list[str]:
        return []

    def provides(self) -> list[str]:
        return ["teacher"]
