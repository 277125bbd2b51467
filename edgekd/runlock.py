"""One run at a time per run directory.

Two `edgekd run` on the same folder would race: the second would take the first one's staging
folders for leftovers of a crash. An exclusive, non-blocking flock on RUN_DIR/.edgekd.lock is held
for the whole run; the kernel releases it when the process ends in any way (Ctrl-C, SIGKILL), so
a crashed run never leaves a stale lock behind. The file names the holder for the error message.
"""

import fcntl
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from edgekd.errors import EdgekdError

LOCK_NAME = ".edgekd.lock"


class RunDirBusy(EdgekdError):
    """Another edgekd process holds the run directory."""


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirBusy(f"run directory {self.path.parent} is in use by another edgekd run ({holder}); wait for "
                             "it to finish, or choose another name= / --run-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": platform.node(),
                                 "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, KeyError, OSError):
        return "holder unknown"
