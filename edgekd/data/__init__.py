"""Task data: reading labelled text files, fixed seeded splits, tokenisation with dynamic padding."""

from edgekd.data.config import DataConfig
from edgekd.data.read import read_labelled_text
from edgekd.data.split import Splits, load_splits, make_splits, save_splits

__all__ = ["DataConfig", "Splits", "load_splits", "make_splits", "read_labelled_text", "save_splits"]
