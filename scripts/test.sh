#!/usr/bin/env bash
# From a fresh clone: set up .venv, then lint (ruff), type-check (mypy), check the import rooms
# (import-linter), build the docs (mkdocs --strict: no broken link), check the images (their pins resolve
# for their Python, hadolint) and run the tests (pytest). The tests generate their tiny checkpoints
# (cached in .cache/test-models) and start real Triton servers.
#   scripts/test.sh            everything, as CI runs it
#   scripts/test.sh --unit     the checks, then the unit tier alone (no server; docs/development.md)
#   scripts/test.sh ARGS       pytest ARGS after the checks (e.g. -k gateway)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/mkdocs build --strict --site-dir .cache/site  # not --quiet: it hides the warnings strict counts
scripts/check-images.sh
if [ "${1:-}" = "--unit" ]; then
  shift
  exec .venv/bin/python -m pytest -q -p no:cacheprovider -m "not server and not e2e and not slow" "$@"
fi
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
