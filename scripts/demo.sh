#!/usr/bin/env bash
# Set up, then train a character-level GRU on the embedded Shakespeare for about three minutes and
# print samples at temperatures 0.2, 1.0 and 2.0. Extra arguments go to `folio lm train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/folio lm train --corpus shakespeare --out runs/shakespeare --max-time 180 "$@"
