#!/usr/bin/env bash
# Set up, then run the whole test suite, slow tests included (about 5 minutes on 2 cores).
# Arguments go to pytest: `bash scripts/test.sh -m "not slow"` is the quick subset (the tests marked
# `slow`, over ~5 s each, left out).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench
exec .venv/bin/python -m pytest tests "$@"
