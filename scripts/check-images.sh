#!/usr/bin/env bash
# The images build from what they pin: lint both Dockerfiles (hadolint), then resolve each image's
# requirements for the image's own Python and platform with pip's dry run (Python 3.11 on Debian
# bookworm, glibc 2.36: docker/Dockerfile's PYTHON_IMAGE). torch resolves alone (--no-deps) from where the
# GPU image takes it, PyPI; the CPU image's torch==X+cpu comes from PyTorch's own index, which this check
# cannot reach from every machine (docs/deploy.md).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/hadolint docker/Dockerfile docker/gateway.Dockerfile
python_version=$(sed -n 's/^ARG PYTHON_IMAGE=python:\([0-9.]*\)-.*/\1/p' docker/Dockerfile)
[ "$python_version" = "$(sed -n 's/^ARG PYTHON_IMAGE=python:\([0-9.]*\)-.*/\1/p' docker/gateway.Dockerfile)" ]
torch_version=$(sed -n 's/^ARG TORCH_VERSION=//p' docker/Dockerfile)
grep -qx "torch==${torch_version}" requirements/serve.txt || { echo "docker/Dockerfile's TORCH_VERSION is not serve.txt's pin" >&2; exit 1; }
platforms=()
for glibc in 36 35 34 31 28 27 26 24 17; do platforms+=(--platform "manylinux_2_${glibc}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform linux_x86_64)
dry_run() {  # pip's resolution for the image's Python, without this machine's wheel folders and indexes
  PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --dry-run --ignore-installed --target .cache/image-check --only-binary=:all: --python-version "$python_version" \
    --implementation cp "${platforms[@]}" --index-url https://pypi.org/simple "$@"
}
dry_run -c requirements/constraints.txt -r <(grep -v '^torch==' requirements/serve.txt)
dry_run --no-deps "torch==${torch_version}"
dry_run -c requirements/constraints.txt -r requirements/gateway.txt
echo "images: Dockerfiles lint clean; serve and gateway requirements resolve for Python ${python_version}"
