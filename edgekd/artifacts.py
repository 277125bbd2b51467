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


ARTIFACT_FIELDS = ("role", "source", "precision", "runtime", "tokenizer", "pad_id", "task")


@dataclass
class Artifact:
    """One named output of a stage, with what it is, so no stage guesses from names or neighbours."""

    name: str  # e.g. "teacher", "student", "student.onnx", "student.int8-dynamic.onnx"
    type: str  # "hf-model" | "onnx" | "bundle" | "json" | "data" | "file"
    path: Path  # absolute
    role: str | None = None  # "teacher" | "student" | "pruned" | "peer": what it is to the comparison
    source: str | None = None  # name of the artifact it was made from (student.onnx <- student)
    precision: str | None = None  # "fp32" | "int8-dynamic" | "int8-static"
    runtime: str | None = None  # "pytorch" | "onnxruntime": what runs it
    tokenizer: Path | None = None  # absolute path of the folder holding its tokenizer files
    pad_id: int | None = None
    task: str | None = None  # "text-classification"
    meta: dict[str, Any] = field(default_factory=dict)  # anything else (preset, validation accuracy...)

    def to_manifest(self, root: Path) -> dict[str, Any]:
        entry = {"type": self.type, "path": str(self.path.relative_to(root))}
        for key in ARTIFACT_FIELDS:
            value = getattr(self, key)
            if key == "tokenizer" and value is not None:
                value = os.path.relpath(value, root)  # stays valid when the staging folder is renamed
            entry[key] = value
        return {**entry, "meta": self.meta}

    @classmethod
    def from_manifest(cls, name: str, entry: dict[str, Any], root: Path) -> "Artifact":
        fields = {k: entry.get(k) for k in ARTIFACT_FIELDS}
        if fields["tokenizer"] is not None:
            fields["tokenizer"] = (root / fields["tokenizer"]).resolve()
        return cls(name=name, type=entry["type"], path=root / entry["path"], meta=entry.get("meta", {}), **fields)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, None when there is none; a corrupt one is an error naming the file."""
    from edgekd.errors import EdgekdError

    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgekdError(f"{path}: corrupt stage manifest ({exc}); delete its folder to recompute that stage") from None
    if not isinstance(manifest, dict) or "kind" not in manifest:
        raise EdgekdError(f"{path}: not an edgekd stage manifest (no 'kind'); delete its folder to recompute that stage")
    return manifest


def stage_outputs(folder: Path, manifest: dict[str, Any]) -> dict[str, Artifact]:
    return {name: Artifact.from_manifest(name, e, folder) for name, e in manifest.get("outputs", {}).items()}


STAGING_MARK = ".edgekd-staging"


class StagingDir:
    """A temporary folder that becomes ``final`` on :meth:`commit`, or disappears on failure.

    It carries a marker file, so that clean-up after a crash removes only folders edgekd made.
    """

    def __init__(self, final: Path):
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.tmp-", dir=self.final.parent))
        os.chmod(self.path, 0o755)  # mkdtemp makes 0700; stage folders are shared like any output
        (self.path / STAGING_MARK).write_text("edgekd staging folder; removed if its run was interrupted\n")

    def commit(self) -> Path:
        if self.final.exists():
            raise FileExistsError(f"{self.final} already exists and is not a finished stage folder of this run; "
                                  "move it away (edgekd never deletes folders it did not make)")
        (self.path / STAGING_MARK).unlink()
        os.replace(self.path, self.final)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def remove_interrupted_staging(run_dir: Path) -> list[Path]:
    """Delete staging folders of interrupted runs: only those matching our name pattern AND marked."""
    removed = []
    for candidate in Path(run_dir).glob(".*.tmp-*"):
        if candidate.is_dir() and not candidate.is_symlink() and (candidate / STAGING_MARK).is_file():
            shutil.rmtree(candidate)
            removed.append(candidate)
    return removed


def folder_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
