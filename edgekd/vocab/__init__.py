"""Vocabulary trimming: keep only the word embeddings (and tokenizer entries) the task's text uses.

Light on purpose (the config table imports it): the functions live in edgekd.vocab.core, which imports torch.
"""

from edgekd.vocab.config import VocabConfig

__all__ = ["VocabConfig"]
