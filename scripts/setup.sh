#!/usr/bin/env bash
# Create .venv with pinned dependencies and this checkout installed. `scripts/setup.sh test` adds the
# reference implementation (FlagEmbedding), the test tools, Debian's chromium (the playground's
# browser test drives it headless through playwright) and g++ (`--compile inductor` builds C++).
# Needs Python 3.10-3.13 as `python3` (or $PYTHON); no Debian package is needed to serve.
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
# Debian packages the tests need: chromium (the playground's page) and g++ (`--compile inductor` builds C++).
packages=()
if [ "${1:-}" = "test" ]; then
  command -v chromium >/dev/null || packages+=(chromium)
  command -v g++ >/dev/null || packages+=(g++)
fi
if [ "${#packages[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q "${packages[@]}" >/dev/null || { $sudo apt-get update -q && $sudo apt-get install -y -q "${packages[@]}" >/dev/null; }
fi
