import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# A pattern a tiny model can learn in seconds, with speaker lines like the real corpus.
PATTERN = "ROMEO:\nHow are you? I am well.\n\nJULIET:\nAnd how are you, my lord?\n\n"


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(PATTERN * 200, encoding="utf-8")
    return path


def folio_command() -> list[str]:
    """The installed console script, to run as a real subprocess."""
    exe = Path(sys.executable).with_name("folio")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "folio.cli"]


@pytest.fixture
def folio_cmd():
    return folio_command()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FOLIO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
