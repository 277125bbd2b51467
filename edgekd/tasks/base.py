"""The interface every task family implements (see edgekd/tasks/__init__.py)."""

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the runner imports this module; torch loads only when a stage trains
    import torch

    from edgekd.train import FitResult, Selection


class Task(Protocol):
    name: str  # the pipeline's `task` value, also written on every artifact
    selection: "Selection"  # the validation metric that picks checkpoints, with its direction
    export_task: str  # the exporter's task name (optimum's vocabulary)

    def resolve_data(self, source: str) -> Path | str:
        """The local file or folder a data `source` names (builtin: assets fetched on first use)."""

    def prepare_data(self, data_cfg: Any, source: Path | str, seed: int) -> tuple[Any, dict, str]:
        """Read and split the data: (splits, manifest metrics, one log line)."""

    def save_splits(self, splits: Any, folder: Path) -> None: ...

    def load_splits(self, folder: Path) -> Any: ...

    def load_for_training(self, source: str, splits: Any, finetune: bool) -> tuple["torch.nn.Module", Any]:
        """(model, tokenizer) from a model folder, ready to be trained on these splits."""

    def finetune(self, model, tokenizer, splits, cfg, seed: int, max_length: int, device: "torch.device") -> "FitResult":
        """Train ``model`` in place on the train split; the best validation checkpoint is restored."""

    def validate(self, model, tokenizer, splits, max_length: int) -> dict[str, float]:
        """Validation metrics (never the test split: the bench reads it once)."""

    def save(self, model, tokenizer, folder: Path) -> None: ...
