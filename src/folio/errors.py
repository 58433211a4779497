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


class OutputError(FolioError):
    """An output path (`--out`, a checkpoint being saved) cannot be written."""


class DivergedError(FolioError):
    """Training produced a loss that is not a finite number (the learning rate is usually too high)."""


def decode_utf8(data: bytes, name: str, first_line: int = 1, first_byte: int = 0) -> str:
    """`data` as UTF-8 text; where it is not, a `DataError` that names `name` and the line and byte of the
    first bad byte (`first_line`/`first_byte`: where `data` starts in a longer file)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + data[: err.start].count(b"\n")
        raise DataError(f"{name} is not UTF-8 (line {line}, byte {first_byte + err.start}); re-save it as UTF-8") from None
