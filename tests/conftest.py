"""Fixtures every test gets or may ask for. What test files share otherwise lives in tests/helpers
(test files and conftests are never imported by name)."""

import os
from pathlib import Path

import pytest

from tests.helpers import PATTERN, folio_command

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(PATTERN * 200, encoding="utf-8")
    return path


@pytest.fixture
def folio_cmd():
    return folio_command()


# Under pytest-xdist every worker is one of the machine's cores (scripts/test.sh): one thread each, in this
# process and in the processes a test starts, so that workers do not fight over cores (and idle threads spin).
_THREADS = "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"
if _THREADS == "1":
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FOLIO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    os.environ.setdefault("OMP_NUM_THREADS", _THREADS)
