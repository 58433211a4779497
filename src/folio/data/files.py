"""The one check every data path passes before it is opened: it must be a regular file.

A FIFO would block the read forever, a device such as /dev/zero would never end, and a directory cannot be
read as text; `os.stat` tells them apart without opening anything.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from folio.errors import DataError


def require_file(path: str | os.PathLike, what: str = "file") -> None:
    """A `DataError` naming `what` and `path` unless `path` is a regular file (a link to one is fine).

        require_file("corpus.txt", "corpus file")
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except OSError as err:
        raise DataError(f"{what} {path} cannot be read: {err.strerror or err}") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{what} {path} is a directory, not a file; give the file itself")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"
        raise DataError(f"{what} {path} is {kind}, not a regular file; give a file")
