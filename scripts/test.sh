#!/usr/bin/env bash
# Set up, then run the whole test suite, slow tests included, one test file per core at a time (pytest-xdist,
# `--dist loadfile`: a file's module fixtures are built once). Arguments go to pytest:
# `bash scripts/test.sh -m "not slow"` is the quick subset (the tests marked `slow`, over ~5 s each, left out);
# `-n 0` runs everything in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench
exec .venv/bin/python -m pytest tests -n "${FOLIO_TEST_WORKERS:-auto}" --dist loadfile "$@"
