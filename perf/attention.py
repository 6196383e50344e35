"""The encoder's attention alone, at the shapes the server runs: torch's SDPA (what the model uses) against
oneDNN Graph's fused attention (TorchScript's LLGA fuser), time and error.

    .venv/bin/python perf/attention.py [--rounds 5] [--shapes 8x256 32x16 1x2048] [--preset small]

Why: on CPUs without AMX, torch's CPU flash kernel computes its bf16 GEMMs with MKL's
`GEMM_BF16BF16F32` (see `MKL_VERBOSE=1`), which on AMD EPYC runs far below oneDNN's bf16 kernels; attention
is ~4% of the FLOPs and ~13% of a 256-token pass. This measures whether oneDNN's own fused attention
would close that, before anything of it goes into the model.

Per shape (rows x tokens, 16 heads of 64, bf16, no padding): milliseconds per call (median over the
rounds, each round timing both in turn, after each has seen the shape twice), the first two calls on a
shape oneDNN Graph has not seen (profiling and compiling), and the mean absolute error of the output
against float64 attention on the same bf16 inputs. TorchScript's default fusion strategy stops
specializing after a few shapes and then runs unfused; the dynamic strategy set here keeps fusing.

Then the model core of `--preset` (random weights, bf16) on 32 passages of 256 tokens, all three outputs,
with SDPA and with oneDNN Graph's attention swapped in for this measurement only (unpadded bf16 calls of
64 tokens or more; the model itself does not use it), taking turns for `--rounds` rounds, and how far
the two runs' dense and ColBERT vectors are apart.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import benchmark_checkpoint, machine, parser, publish  # noqa: E402
from corpus import make_texts  # noqa: E402

HEADS, HEAD_DIM = 16, 64


class ScoredAttention(torch.nn.Module):
    """softmax(q k^T / sqrt(d)) v in plain ops: the pattern oneDNN Graph fuses."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = torch.matmul(q, k.transpose(-1, -2)) / (HEAD_DIM ** 0.5)
        return torch.matmul(torch.softmax(scores, dim=-1), v)


def inputs(rows: int, tokens: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, HEADS, tokens, HEAD_DIM, generator=generator).to(torch.bfloat16) for _ in range(3)]


def timed(call: Callable[..., torch.Tensor], args: list[torch.Tensor], repeat: int = 5) -> float:
    """Median milliseconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call(*args)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def error(output: torch.Tensor, args: list[torch.Tensor]) -> float:
    reference = torch.nn.functional.scaled_dot_product_attention(*[a.double() for a in args])
    return float((output.double() - reference).abs().mean())


def model_rates(preset: str, fused: torch.jit.ScriptModule, rounds: int) -> tuple[float, float, float, float]:
    """Passages/s of the model core with SDPA and with `fused` attention (medians), and the least cosine
    between the two runs' dense vectors and between their ColBERT vectors."""
    import numpy as np
    import transformers.integrations.sdpa_attention as hf_sdpa

    from bge_m3_triton.core.m3 import M3Model
    from bge_m3_triton.core.settings import ModelSettings

    original = torch.nn.functional.scaled_dot_product_attention
    swapped = {"on": False}

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                  **options: object) -> torch.Tensor:
        if (swapped["on"] and attn_mask is None and q.dtype == torch.bfloat16 and q.shape[-2] >= 64
                and not options.get("is_causal") and options.get("scale") in (None, HEAD_DIM ** -0.5)):
            return fused(q, k, v)
        return original(q, k, v, attn_mask=attn_mask, **options)  # type: ignore[arg-type]

    hf_sdpa.torch.nn.functional.scaled_dot_product_attention = attention  # type: ignore[assignment]
    try:
        model = M3Model.load(ModelSettings(model=str(benchmark_checkpoint(preset)), dtype="auto", device="cpu"))
        tokens = model.tokenize(make_texts(model.tokenizer, 32, 256, seed=2), [8192] * 32)
        results, rates = {}, {False: [], True: []}
        for on in (False, True):
            swapped["on"] = on
            model.encode_tokenized(tokens)  # warm-up: the shapes seen twice
            results[on] = model.encode_tokenized(tokens)
        for _ in range(rounds):
            for on in (False, True):
                swapped["on"] = on
                start = time.perf_counter()
                model.encode_tokenized(tokens)
                rates[on].append(len(tokens.ids) / (time.perf_counter() - start))
        dense = min(float(np.dot(a.dense, b.dense)) for a, b in zip(results[False], results[True]))
        colbert = min(float((a.colbert * b.colbert).sum(-1).min()) for a, b in zip(results[False], results[True]))
        return statistics.median(rates[False]), statistics.median(rates[True]), dense, colbert
    finally:
        hf_sdpa.torch.nn.functional.scaled_dot_product_attention = original


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--rounds", type=int, default=5)
    options.add_argument("--shapes", nargs="*", default=["8x256", "32x16", "1x2048"])
    args = options.parse_args()

    from bge_m3_triton.core.allocator import keep_freed_memory
    from bge_m3_triton.core.devices import configure_threads

    keep_freed_memory()  # as the server runs
    threads = configure_threads(0)
    torch.jit.enable_onednn_fusion(True)
    torch.jit.set_fusion_strategy([("DYNAMIC", 1000)])
    sdpa = torch.nn.functional.scaled_dot_product_attention
    shapes = [tuple(int(x) for x in spec.split("x")) for spec in args.shapes]
    lines = []
    with torch.no_grad():
        fused = torch.jit.freeze(torch.jit.trace(ScoredAttention().eval(), inputs(2, 64, seed=0)))
        for rows, tokens in shapes:
            data = inputs(rows, tokens, seed=rows * 10_000 + tokens)
            cold = []
            for _ in range(2):
                start = time.perf_counter()
                fused(*data)
                cold.append((time.perf_counter() - start) * 1000)
            sdpa(*data)
            times: dict[str, list[float]] = {"sdpa": [], "onednn": []}
            for _ in range(args.rounds):
                times["sdpa"].append(timed(sdpa, data))
                times["onednn"].append(timed(fused, data))
            flops = 4 * rows * HEADS * tokens * tokens * HEAD_DIM
            ms = {name: statistics.median(values) for name, values in times.items()}
            errors = {"sdpa": error(sdpa(*data), data), "onednn": error(fused(*data), data)}
            lines.append(
                f"| {rows} x {tokens} | {ms['sdpa']:.2f} ({flops / ms['sdpa'] / 1e6:.0f} GFLOP/s) | "
                f"{ms['onednn']:.2f} ({flops / ms['onednn'] / 1e6:.0f} GFLOP/s) | {ms['sdpa'] / ms['onednn']:.2f}x | "
                f"{cold[0]:.1f} / {cold[1]:.1f} | {errors['sdpa']:.2e} | {errors['onednn']:.2e} |")
            print(f"[attention] {lines[-1]}", flush=True)
    sdpa_rate, fused_rate, dense_cos, colbert_cos = model_rates(args.preset, fused, args.rounds)
    text = "\n".join([
        "# attention alone: torch SDPA against oneDNN Graph", "",
        f"Machine: {machine()}; {threads} threads; bf16, {HEADS} heads of {HEAD_DIM}, no padding; "
        f"medians of {args.rounds} rounds of 5 calls each, the two taking turns; torch {torch.__version__}.", "",
        "| rows x tokens | SDPA ms | oneDNN Graph ms | speed-up | oneDNN Graph first two calls on the shape, ms "
        "| SDPA mean abs error | oneDNN Graph mean abs error |",
        "|---|---|---|---|---|---|---|", *lines, "",
        f"Model core, preset `{args.preset}` (random weights, bf16), 32 passages of 256 tokens, all three outputs, "
        f"medians of {args.rounds} rounds taking turns: SDPA {sdpa_rate:.2f} passages/s, oneDNN Graph attention "
        f"{fused_rate:.2f} ({fused_rate / sdpa_rate:.2f}x); between the two, dense cosine at least {dense_cos:.6f}, "
        f"ColBERT cosine at least {colbert_cos:.6f}."])
    publish(text, args.out, "attention")
    return 0


if __name__ == "__main__":
    sys.exit(main())
