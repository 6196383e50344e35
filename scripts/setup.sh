#!/usr/bin/env bash
# Create .venv with pinned dependencies and this checkout installed. `scripts/setup.sh test` adds the
# reference implementation (FlagEmbedding) and the test tools. Needs Python 3.10-3.13 as `python3`
# (or $PYTHON); no Debian packages are needed to serve or test (perf/ installs its own).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
requirements=(-r requirements/serve.txt)
if [ "${1:-}" = "test" ]; then
  requirements+=(-r requirements/test.txt)
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt "${requirements[@]}"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e client -e gateway -e .
