"""Every error Folio raises on purpose is a `FolioError`: the CLI prints its message on one line."""


class FolioError(Exception):
    """A problem with the user's input, data, checkpoint or options; the message says how to fix it."""


class DataError(FolioError):
    """A corpus or data file is missing, empty, unreadable or malformed."""


class VocabularyError(FolioError):
    """Text holds symbols that the vocabulary cannot encode."""


class CheckpointError(FolioError):
    """A checkpoint directory is missing, corrupt, or belongs to another task."""


class ConfigError(FolioError):
    """An option has a value that cannot work."""
