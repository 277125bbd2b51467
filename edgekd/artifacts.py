"""What passes between stages: a folder with a manifest, written atomically.

A stage builds its folder under a temporary name and renames it into place only when it has
finished, manifest included. A folder with a manifest is therefore always complete; anything
else in the run directory is an interrupted attempt and is discarded on the next run.
"""

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename (no half-written files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


@dataclass
class Artifact:
    """One named output of a stage: a model folder, an ONNX file, a bundle, a JSON file."""

    name: str  # e.g. "teacher", "student", "student.onnx", "student.int8-dynamic.onnx"
    type: str  # "hf-model" | "onnx" | "bundle" | "json" | "data"
    path: Path  # absolute
    meta: dict[str, Any] = field(default_factory=dict)

    def to_manifest(self, root: Path) -> dict[str, Any]:
        return {"type": self.type, "path": str(self.path.relative_to(root)), "meta": self.meta}

    @classmethod
    def from_manifest(cls, name: str, entry: dict[str, Any], root: Path) -> "Artifact":
        return cls(name=name, type=entry["type"], path=root / entry["path"], meta=entry.get("meta", {}))


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def stage_outputs(folder: Path, manifest: dict[str, Any]) -> dict[str, Artifact]:
    return {name: Artifact.from_manifest(name, e, folder) for name, e in manifest.get("outputs", {}).items()}


class StagingDir:
    """A temporary folder that becomes ``final`` on :meth:`commit`, or disappears on failure."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.tmp-", dir=self.final.parent))

    def commit(self) -> Path:
        if self.final.exists():  # a stale, manifest-less folder from an older attempt
            shutil.rmtree(self.final)
        os.replace(self.path, self.final)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def folder_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
