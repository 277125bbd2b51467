"""What a stage adapter receives: the pipeline, its own output folder and the artifacts so far."""

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from edgekd.artifacts import ARTIFACT_FIELDS, Artifact
from edgekd.tasks import Task, get_task

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    # Only the pipeline-level settings this stage's cache key covers (its entry's `reads` in
    # edgekd/stages.py): a stage cannot read what would not make it rerun when it changes.
    settings: dict[str, Any]
    out: Path  # this stage's folder (a staging folder until the stage finishes)
    data_dir: Path  # the run's fixed splits
    artifacts: dict[str, Artifact]  # outputs of every earlier stage, by name
    history: list[dict[str, Any]] = field(default_factory=list)  # manifests of the data step and earlier stages
    outputs: dict[str, Artifact] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # The pipeline's task family; it decides the data folder's content, so the data key covers it.
    task_name: str = "text-classification"

    @cached_property
    def task(self) -> Task:
        return get_task(self.task_name)

    @cached_property
    def splits(self) -> Any:
        """The run's fixed splits, as the task reads them (edgekd.data.split.Splits for classification)."""
        return self.task.load_splits(self.data_dir)

    def setting(self, name: str) -> Any:
        if name not in self.settings:
            raise KeyError(f"this stage reads the pipeline setting {name!r}, which its cache key does not cover: "
                           "add it to the stage's `reads` in edgekd/stages.py")
        return self.settings[name]

    @property
    def seed(self) -> int:
        return self.setting("seed")

    @property
    def max_length(self) -> int:
        return self.setting("max_length")

    def artifact(self, name: str) -> Artifact:
        return self.artifacts[name]  # presence is guaranteed by the config's stage-order check

    def add_output(self, name: str, type: str, relpath: str, **fields: Any) -> Path:
        """Declare an output inside this stage's folder and return its absolute path.

        ``fields`` are Artifact fields (role, source, precision, runtime, pad_id, task; tokenizer as a
        path relative to this stage's folder); anything else goes to its ``meta``.
        """
        path = self.out / relpath
        known = {k: fields.pop(k) for k in ARTIFACT_FIELDS if k in fields}
        if known.get("tokenizer") is not None:
            known["tokenizer"] = self.out / known["tokenizer"]
        self.outputs[name] = Artifact(name=name, type=type, path=path, meta=fields, **known)
        return path
