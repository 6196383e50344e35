#!/usr/bin/env bash
# The load-test harness (not part of the test suite): sets up .venv with the test extras (FlagEmbedding
# for the baseline), makes the benchmark checkpoint (.cache/perf-models/<preset>), runs perf_analyzer
# 2.51 (from the tritonclient wheel; its libb64/libcudart come from the pytriton wheel) and prints a
# markdown table, also written to perf/results/. Example: perf/run.sh --preset full
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
exec .venv/bin/python -m perf throughput "$@"
