"""Content digests of local inputs (a model folder, a data file), cheap to recompute.

A stage's cache key must change when the bytes it reads change, even when the path does not
(a CSV edited in place, weights overwritten). Hashing a 90 MB safetensors file on every run costs
about a second, so each file's sha256 is remembered against its (path, size, mtime_ns): an
unchanged file is not read again, a touched or rewritten one is.
"""

import hashlib
import json
import logging
from pathlib import Path

from edgekd.artifacts import atomic_write_json
from edgekd.assets.wheel import sha256_of

log = logging.getLogger(__name__)


class DigestCache:
    """sha256 per file, keyed by absolute path, size and mtime; stored as one JSON file."""

    def __init__(self, store: Path | None):
        self.store = store
        self.entries: dict[str, dict] = {}
        if store is not None and store.is_file():
            try:
                self.entries = json.loads(store.read_text())
            except (OSError, ValueError):
                log.warning("ignoring unreadable digest cache %s", store)
        self.dirty = False

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        entry = self.entries.get(key)
        if entry and entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns:
            return entry["sha256"]
        digest = sha256_of(path)
        self.entries[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        self.dirty = True
        return digest

    def save(self) -> None:
        if self.dirty and self.store is not None:
            try:
                atomic_write_json(self.store, self.entries)
            except OSError as exc:  # a read-only cache only costs time, never correctness
                log.warning("could not save the digest cache %s: %s", self.store, exc)
            self.dirty = False


def path_digest(path: Path, cache: DigestCache) -> str:
    """One sha256 over every file under ``path`` (or of the file itself): names and contents."""
    path = Path(path)
    if path.is_file():
        return cache.sha256(path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path)):
        h.update(str(file.relative_to(path)).encode() + b"\0" + cache.sha256(file).encode() + b"\n")
    return h.hexdigest()


def _hidden(file: Path, root: Path) -> bool:
    """Dot-files and dot-folders (.git, .cache, editor swap files) are not part of a model."""
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def default_cache() -> DigestCache:
    from edgekd.assets.resolve import cache_dir

    return DigestCache(cache_dir() / "digests.json")
