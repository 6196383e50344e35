"""The GPU smoke check, for the day a GPU is at hand (scripts/gpu-smoke.sh; never part of the test command).

On one GPU, in a few minutes: what torch and the GPU are, and the dtype `auto` picks there; a full-size
random-weight checkpoint served with two instances and the cross-encoder; its dense, sparse and ColBERT
outputs against the model core in fp32 on CPU; a batch too large for the GPU's memory fails alone and the
next request succeeds; throughput, p50/p99 and GPU memory per instance. `--device cpu --preset tiny` runs
the same steps on a CPU, to check the script itself.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from perf.common import benchmark_checkpoint, machine

REPO = Path(__file__).resolve().parent.parent


def describe(device: str) -> str:
    import torch

    from bge_m3_triton.core.devices import resolve_device, resolve_dtype

    lines = [f"torch {torch.__version__}, CUDA {torch.version.cuda}, {machine()}"]
    if device.startswith("cuda"):
        index = resolve_device(device)
        lines.append(f"GPU {torch.cuda.get_device_name(index)}, compute capability "
                     f"{'.'.join(map(str, torch.cuda.get_device_capability(index)))}, "
                     f"{torch.cuda.get_device_properties(index).total_memory / 2**30:.1f} GiB")
    lines.append(f"dtype auto picks {resolve_dtype('auto', resolve_device(device))} on {device}")
    return "\n".join(lines)


def passages(count: int, words: int = 180) -> list[str]:
    rng = np.random.default_rng(0)
    vocabulary = ("retrieval", "multilingual", "embedding", "passage", "query", "dense", "sparse", "lexical",
                  "vector", "search", "index", "Triton", "serving", "model", "token", "weight", "score", "ranking",
                  "document", "corpus")
    return [" ".join(rng.choice(vocabulary, words)) for _ in range(count)]


def compare_with_cpu_fp32(checkpoint: Path, served: list, texts: list[str]) -> str:
    from bge_m3_triton.core.m3 import M3Model
    from bge_m3_triton.core.settings import ModelSettings

    reference = M3Model.load(ModelSettings(model=str(checkpoint), dtype="float32", device="cpu", compile="off"))
    expected = reference.encode(texts, [8192] * len(texts), ("dense", "sparse", "colbert"))
    dense = min(float(np.dot(a.dense, b.dense)) for a, b in zip(served, expected))
    colbert = min(float((a.colbert * b.colbert).sum(axis=1).min()) for a, b in zip(served, expected))
    overlap = statistics.mean(len(set(a.sparse["indices"]) & set(map(int, b.sparse_ids))) /
                              max(1, len(set(map(int, b.sparse_ids)))) for a, b in zip(served, expected))
    return (f"against CPU fp32: dense cos min {dense:.5f}, ColBERT cos min {colbert:.5f}, "
            f"sparse id overlap {overlap:.3f}")


def gpu_memory_per_process() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "nvidia-smi not available"
    return "GPU memory per process: " + ("; ".join(out.splitlines()) or "none")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--preset", default="full", choices=("tiny", "small", "full"))
    parser.add_argument("--instances", type=int, default=2)
    args = parser.parse_args()

    from bge_m3_client import BGEM3Client, BGEM3Error
    from bge_m3_triton.ops.processes import start_server
    from bge_m3_triton.ops.testmodel import make_test_model

    print(describe(args.device), flush=True)
    checkpoint = benchmark_checkpoint(args.preset)
    reranker = REPO / ".cache" / "perf-models" / f"{args.preset}-reranker"
    if not (reranker / "config.json").is_file():
        make_test_model(reranker, args.preset, seed=1, reranker=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    started = time.monotonic()
    server = start_server(work, ["--model", str(checkpoint), "--reranker", str(reranker), "--device", args.device,
                                 "--instances", str(args.instances), "--max-batch-tokens", "65536",
                                 "--workdir", str(work / "repo"), "--watchdog-seconds", "0"],
                          ["bge_m3", "bge_m3_rerank", "bge_reranker"])
    print(f"served {args.preset} with {args.instances} instances and the cross-encoder in "
          f"{time.monotonic() - started:.0f} s", flush=True)
    try:
        client = BGEM3Client(server.grpc, protocol="grpc", timeout=600, retries=0)
        texts = passages(8)
        served = client.encode(texts, is_passage=True, return_colbert=True)
        print(compare_with_cpu_fp32(checkpoint, served, texts), flush=True)
        print(f"cross-encoder: {client.rerank('multilingual retrieval', texts[:4], model='bge_reranker')}")

        huge = [" ".join(["memory"] * 8000)] * 64  # one 524,288-token sub-batch: past any one GPU's memory
        try:
            client.encode(huge, is_passage=True, return_colbert=True)
            print("out of memory: the huge batch was served (this device holds it)")
        except BGEM3Error as exc:
            print(f"out of memory: the huge batch failed alone: {type(exc).__name__}: {str(exc)[:160]}")
        after = client.encode(["the next request"])
        print(f"the next request: {'served' if after[0].dense is not None else 'FAILED'}", flush=True)

        batch = passages(32)
        rates = []
        for _ in range(3):
            begun = time.monotonic()
            client.encode(batch, is_passage=True, return_colbert=True)
            rates.append(len(batch) / (time.monotonic() - begun))
        print(f"32 passages per request, all three outputs: {statistics.median(rates):.1f} passages/s (median of 3)")
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            begun = time.monotonic()
            list(pool.map(lambda text: client.encode([text], is_passage=True, return_colbert=True), passages(64)))
            print(f"16 concurrent single passages: {64 / (time.monotonic() - begun):.1f} passages/s")
        lone = []
        for index in range(50):
            begun = time.monotonic()
            client.encode([f"a short query {index}"])
            lone.append((time.monotonic() - begun) * 1000)
        lone.sort()
        print(f"lone query p50 {lone[len(lone) // 2]:.1f} ms, p99 {lone[int(len(lone) * 0.99) - 1]:.1f} ms")
        print(gpu_memory_per_process())
        client.close()
    finally:
        print(f"server stopped with exit code {server.stop()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
