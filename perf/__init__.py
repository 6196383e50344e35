"""The benchmarks: `python -m perf SUITE [options]` (`python -m perf` lists the suites).

Every suite measures on this machine and prints a markdown table with the CPU, its flags and any
instruction-set cap in its header, and writes it to `perf/results/`. Not part of the test suite:
speed and memory are checked here, not by timed unit tests (docs/performance.md).
"""
