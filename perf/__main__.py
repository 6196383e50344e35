"""`python -m perf SUITE [options]`: run one benchmark suite (its own `--help` lists its options)."""

from __future__ import annotations

import runpy
import sys

SUITES = {
    "throughput": ("perf.run", "our server and the naive FlagEmbedding baseline under perf_analyzer, "
                               "the ceiling, the model core alone"),
    "concurrency": ("perf.concurrency", "16 concurrent single passages and one request of 32, against the core, "
                                        "in rounds"),
    "latency": ("perf.latency", "lone queries against the bare core, and queries at concurrency 1 and 8"),
    "fidelity": ("perf.fidelity", "every precision against fp32 on the same checkpoint (a trained encoder: "
                                  "--encoder e5)"),
    "formats": ("perf.formats", "compact vector formats: agreement with float32 on a trained encoder, bytes, "
                                "throughput"),
    "gateway": ("perf.gateway", "the gateway's cost against the client straight to Triton"),
    "bulk": ("perf.bulk", "the bulk job against perf_analyzer's best"),
    "engines": ("perf.engines", "engines and precisions (torch, OpenVINO, its int8 recipes) on the model core, "
                                "in rounds"),
    "ceiling": ("perf.ceiling", "torch's matmul rate at the encoder's shapes: the machine's own limit"),
    "core": ("perf.core_sweep", "the model core alone across token budgets and options"),
    "gpu-smoke": ("perf.gpu_smoke", "the GPU smoke check (scripts/gpu-smoke.sh)"),
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in SUITES:
        print("usage: python -m perf SUITE [options]\n\nsuites:")
        for name, (_, what) in SUITES.items():
            print(f"  {name:12} {what}")
        return 0 if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help") else 2
    module, _ = SUITES[sys.argv[1]]
    sys.argv = [f"python -m perf {sys.argv[1]}", *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
