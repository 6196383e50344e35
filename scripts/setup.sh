#!/usr/bin/env bash
# Create .venv with pinned dependencies and this checkout installed. `scripts/setup.sh test` adds the
# reference implementation (FlagEmbedding), the test tools, Debian's chromium (the playground's
# browser test drives it headless through playwright) and g++ (`--compile inductor` builds C++).
# Needs Python 3.10-3.13 as `python3` (or $PYTHON); no Debian package is needed to serve, but on a CPU
# with AMX it tries to install g++ where missing: `--compile auto` then builds inductor's kernels there.
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
apt_install() {  # as root, else through sudo ($SUDO: "sudo -n" never asks for a password)
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="${SUDO:-sudo}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q "$@" >/dev/null || { $sudo apt-get update -q && $sudo apt-get install -y -q "$@" >/dev/null; }
}
if [ "${#packages[@]}" -gt 0 ]; then
  apt_install "${packages[@]}"
elif grep -qw amx_tile /proc/cpuinfo 2>/dev/null && ! command -v "${CXX:-g++}" >/dev/null && ! command -v g++ >/dev/null; then
  # serving with AMX: best effort, as serving runs eager without it (README: CPU defaults, --compile);
  # inductor builds with $CXX where it is set, else g++.
  SUDO="sudo -n" apt_install g++ 2>/dev/null || echo "setup: could not install g++; --compile auto will run the model eager" >&2
fi
