"""Cached, checksummed downloads for users with internet access."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from folio.errors import DataError


def cache_dir() -> Path:
    """`$FOLIO_CACHE`, else `$XDG_CACHE_HOME/folio`, else `~/.cache/folio`."""
    if os.environ.get("FOLIO_CACHE"):
        return Path(os.environ["FOLIO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "folio"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, sha256: str, filename: str, cache: Path | None = None, timeout: float = 60) -> Path:
    """Return the cached copy of `url`, downloading it once and verifying its sha256.

    A cached file whose checksum does not match is downloaded again; a download that does not match
    is refused and never lands in the cache (it is written to a temporary file first).
    """
    cache = Path(cache) if cache is not None else cache_dir()
    target = cache / filename
    if target.exists() and sha256_of(target) == sha256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=f".{filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while block := response.read(1 << 20):
                out.write(block)
        got = sha256_of(tmp)
        if got != sha256:
            raise DataError(f"download of {url} has sha256 {got}, expected {sha256}; not cached")
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as err:
        raise DataError(f"could not download {url}: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return target
