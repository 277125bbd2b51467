"""User-facing errors.

An :class:`EdgekdError` carries a one-line message that names the problem (the field, the file, the
allowed values). The CLI prints it without a traceback unless ``--debug`` is given; everything else
is a bug and keeps its traceback.
"""


class EdgekdError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(EdgekdError):
    """A pipeline file or override that does not validate."""


class AssetError(EdgekdError):
    """A model or dataset that cannot be found, fetched or read."""


class DataError(EdgekdError):
    """A dataset whose content cannot be used (missing columns, empty split, one class...)."""


class ParityError(EdgekdError):
    """An exported model whose outputs disagree with PyTorch beyond the configured tolerance."""
