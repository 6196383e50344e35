#!/usr/bin/env bash
# The GPU smoke check, for the day a GPU is at hand (a few minutes on one GPU; never part of the test command):
# torch, CUDA, the compute capability and the dtype `auto` picks; a full-size random-weight checkpoint served
# with two instances and the cross-encoder; dense, sparse and ColBERT against CPU fp32; an out-of-memory batch
# that fails alone; throughput, p50/p99 and memory per instance (docs/deploy.md). Options pass through to
# `python -m perf gpu-smoke` (--device cuda:1, --preset small, --instances 1; --device cpu --preset tiny checks
# the script itself on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
exec .venv/bin/python -m perf gpu-smoke "$@"
