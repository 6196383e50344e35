#!/usr/bin/env bash
# From a fresh clone: set up .venv, then lint (ruff), type-check (mypy) and run the tests (pytest).
# The tests generate their tiny checkpoints (cached in .cache/test-models) and start real Triton servers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
