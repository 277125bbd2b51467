"""Encoder classifiers: architecture adapters and a loader that understands pruned layouts."""

from edgekd.models.arch import EncoderArch, arch_of
from edgekd.models.io import count_parameters, load_classifier, load_tokenizer, save_classifier

__all__ = ["EncoderArch", "arch_of", "count_parameters", "load_classifier", "load_tokenizer", "save_classifier"]
