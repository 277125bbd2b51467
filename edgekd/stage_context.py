"""What a stage adapter receives: the pipeline, its own output folder and the artifacts so far."""

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from edgekd.artifacts import Artifact
from edgekd.data.split import Splits, load_splits

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    pipeline: Any  # PipelineConfig (not imported here to keep the import graph acyclic)
    out: Path  # this stage's folder (a staging folder until the stage finishes)
    data_dir: Path  # the run's fixed splits
    artifacts: dict[str, Artifact]  # outputs of every earlier stage, by name
    history: list[dict[str, Any]] = field(default_factory=list)  # manifests of the data step and earlier stages
    outputs: dict[str, Artifact] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def splits(self) -> Splits:
        return load_splits(self.data_dir)

    @property
    def seed(self) -> int:
        return self.pipeline.seed

    @property
    def max_length(self) -> int:
        return self.pipeline.model.max_length

    def artifact(self, name: str) -> Artifact:
        return self.artifacts[name]  # presence is guaranteed by the config's stage-order check

    def add_output(self, name: str, type: str, relpath: str, **meta: Any) -> Path:
        """Declare an output inside this stage's folder and return its absolute path."""
        path = self.out / relpath
        self.outputs[name] = Artifact(name=name, type=type, path=path, meta=meta)
        return path

    def models(self) -> dict[str, Artifact]:
        """Every PyTorch model folder produced so far (teacher, pruned, student...)."""
        return {n: a for n, a in self.artifacts.items() if a.type == "hf-model"}
