"""The encoder's attention: torch's SDPA against the `attention onednn-graph` setting (oneDNN Graph's fused
attention through TorchScript's LLGA fuser, `bge_m3_triton.core.attention`), alone and in the model core.

    .venv/bin/python perf/attention.py [--rounds 5] [--shapes 8x256 16x300p 32x16 1x2048] [--preset small]
                                       [--dtype bfloat16]

Why: on CPUs without AMX, torch's CPU flash kernel computes its bf16 GEMMs with MKL's `GEMM_BF16BF16F32`
(see `MKL_VERBOSE=1`), which on AMD EPYC runs far below oneDNN's bf16 kernels; attention is ~4% of the
FLOPs and ~13% of a 256-token pass there. This measures what the fused attention gives on this machine,
the figure `attention auto` is chosen by.

Attention alone, per shape (rows x tokens, 16 heads of 64; a `p` suffix: the rows' lengths spread evenly
from half the tokens to all, right-padded and masked, as a sub-batch of mixed lengths; else every row
full): milliseconds per call of what the model runs (transformers' SDPA with its padding mask, against the
fused attention run row by row at bucketed lengths), medians over the rounds, each round timing both in
turn after each has seen the shape; and the mean absolute error over the rows' real tokens against
float64 attention on the same inputs.

Then the model core of `--preset` (random weights) with `attention sdpa` and `attention onednn-graph` (one
loaded model, its attention switched in turn, `--rounds` rounds): 32 passages of ~256 tokens, 32 queries
of ~16 tokens and 2 passages of ~1,500 tokens per call, all three outputs; how far the two settings'
dense and ColBERT vectors are apart; and batch-composition drift under each (8 passages each encoded
alone and inside one batch with the others: the largest change of a dense component).
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import benchmark_checkpoint, machine, parser, publish  # noqa: E402
from corpus import make_texts  # noqa: E402

HEADS, HEAD_DIM = 16, 64


def shape_inputs(spec: str, dtype: torch.dtype) -> tuple[list[torch.Tensor], torch.Tensor, list[int]]:
    """Query, key and value for `spec` (`RxT` or `RxTp`), transformers' boolean padding mask and the
    rows' lengths."""
    padded = spec.endswith("p")
    rows, tokens = (int(x) for x in spec.rstrip("p").split("x"))
    lengths = [tokens - (tokens // 2) * i // max(rows - 1, 1) for i in range(rows)] if padded else [tokens] * rows
    generator = torch.Generator().manual_seed(rows * 10_000 + tokens)
    qkv = [torch.randn(rows, HEADS, tokens, HEAD_DIM, generator=generator).to(dtype) for _ in range(3)]
    keep = torch.arange(tokens)[None, :] < torch.tensor(lengths)[:, None]
    return qkv, keep[:, None, None, :].expand(rows, 1, tokens, tokens), lengths


def timed(call: Callable[[], Any], repeat: int = 5) -> float:
    """Median milliseconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def error(output: torch.Tensor, qkv: list[torch.Tensor], lengths: list[int]) -> float:
    """Mean absolute error of `output` ([rows, tokens, heads, dim]) over each row's own tokens."""
    errors = []
    for row, count in enumerate(lengths):
        q, k, v = (t[row:row + 1, :, :count].double() for t in qkv)
        reference = torch.nn.functional.scaled_dot_product_attention(q, k, v)[0].transpose(0, 1)
        errors.append((output[row, :count].double() - reference).abs().flatten())
    return float(torch.cat(errors).mean())


def attention_rows(specs: list[str], dtype: torch.dtype, rounds: int) -> list[str]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from bge_m3_triton.core import attention

    attention.prepare(HEADS, HEAD_DIM, dtype)
    module = torch.nn.Module()
    module.is_causal = False  # type: ignore[assignment]
    lines = []
    for spec in specs:
        qkv, mask, lengths = shape_inputs(spec, dtype)
        calls = {"sdpa": functools.partial(sdpa_attention_forward, module, *qkv, mask),
                 "fused": functools.partial(attention.attention_forward, module, *qkv, mask)}
        outputs = {name: call()[0] for name, call in calls.items()}  # each sees the shape (and compiles) first
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(rounds):
            for name, call in calls.items():
                times[name].append(timed(call))
        ms = {name: statistics.median(values) for name, values in times.items()}
        flops = sum(4 * HEADS * count * count * HEAD_DIM for count in lengths)
        lines.append(
            f"| {spec} | {ms['sdpa']:.2f} ({flops / ms['sdpa'] / 1e6:.0f} GFLOP/s) | {ms['fused']:.2f} "
            f"({flops / ms['fused'] / 1e6:.0f} GFLOP/s) | {ms['sdpa'] / ms['fused']:.2f}x | "
            f"{error(outputs['sdpa'], qkv, lengths):.2e} | {error(outputs['fused'], qkv, lengths):.2e} |")
        print(f"[attention] {lines[-1]}", flush=True)
    return lines


def drift(model: Any, texts: list[str]) -> float:
    """The largest change of a dense component between each text encoded alone and inside one batch."""
    import numpy as np

    together = model.encode(texts, [8192] * len(texts), outputs=["dense"])
    alone = [model.encode([text], [8192], outputs=["dense"])[0] for text in texts]
    return max(float(np.abs(a.dense - b.dense).max()) for a, b in zip(together, alone))


def model_rows(preset: str, dtype: str, rounds: int) -> list[str]:
    import numpy as np

    from bge_m3_triton.core import attention
    from bge_m3_triton.core.m3 import M3Model
    from bge_m3_triton.core.settings import ModelSettings

    model = M3Model.load(ModelSettings(model=str(benchmark_checkpoint(preset)), dtype=dtype, device="cpu",
                                       attention="onednn-graph", compile="off"))  # eager: the attention is switched
    encoder = model.encoder
    if encoder.config._attn_implementation != attention.NAME:
        return [f"(the model core did not take the fused attention: {encoder.config._attn_implementation})"]
    tokenizer = model.tokenizer
    workloads = {"32 passages of ~256 tokens": make_texts(tokenizer, 32, 256, seed=2),
                 "32 queries of ~16 tokens": make_texts(tokenizer, 32, 16, seed=3),
                 "2 passages of ~1,500 tokens": make_texts(tokenizer, 2, 1500, seed=4)}
    settings = {"sdpa": "sdpa", "onednn-graph": attention.NAME}
    lines = []
    for what, texts in workloads.items():
        tokens = model.tokenize(texts, [8192] * len(texts))
        results, rates = {}, {name: [] for name in settings}  # type: ignore[var-annotated]
        for name, implementation in settings.items():
            encoder.set_attn_implementation(implementation)
            model.encode_tokenized(tokens)  # warm-up: every bucket seen
            results[name] = model.encode_tokenized(tokens)
        for _ in range(rounds):
            for name, implementation in settings.items():
                encoder.set_attn_implementation(implementation)
                start = time.perf_counter()
                model.encode_tokenized(tokens)
                rates[name].append(len(texts) / (time.perf_counter() - start))
        rate = {name: statistics.median(values) for name, values in rates.items()}
        spread = {name: f"{min(values):.2f}-{max(values):.2f}" for name, values in rates.items()}
        pairs = list(zip(results["sdpa"], results["onednn-graph"]))
        dense = min(float(np.dot(a.dense, b.dense)) for a, b in pairs)
        colbert = min(float((a.colbert * b.colbert).sum(-1).min()) for a, b in pairs)
        lines.append(f"| {what} | {rate['sdpa']:.2f} ({spread['sdpa']}) | {rate['onednn-graph']:.2f} "
                     f"({spread['onednn-graph']}) | "
                     f"{rate['onednn-graph'] / rate['sdpa']:.2f}x | {dense:.6f} | {colbert:.6f} |")
        print(f"[model] {lines[-1]}", flush=True)
    short = [text for text in make_texts(tokenizer, 8, 240, seed=5)]
    short = [tokenizer.decode(tokenizer(t, add_special_tokens=False)["input_ids"][:80 + 22 * i])
             for i, t in enumerate(short)]
    drifts = {}
    for name, implementation in settings.items():
        encoder.set_attn_implementation(implementation)
        drifts[name] = drift(model, short)
    lines.append(f"\nBatch-composition drift (8 passages of 80..234 tokens, alone vs in one batch, largest change "
                 f"of a dense component): SDPA {drifts['sdpa']:.1e}, onednn-graph {drifts['onednn-graph']:.1e}.")
    print(lines[-1], flush=True)
    return lines


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--rounds", type=int, default=5)
    options.add_argument("--shapes", nargs="*", default=["8x256", "16x300p", "32x16", "4x512", "1x2048"])
    options.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = options.parse_args()

    from bge_m3_triton.core.allocator import keep_freed_memory
    from bge_m3_triton.core.devices import configure_threads

    keep_freed_memory()  # as the server runs
    threads = configure_threads(0)
    dtype = getattr(torch, args.dtype)
    with torch.inference_mode():
        alone = attention_rows(args.shapes, dtype, args.rounds)
        in_model = model_rows(args.preset, args.dtype, args.rounds)
    text = "\n".join([
        f"# attention: torch SDPA against onednn-graph ({args.dtype})", "",
        f"Machine: {machine()}; {threads} threads; torch {torch.__version__}; medians of {args.rounds} rounds, "
        "the two taking turns.", "",
        f"Attention alone, {HEADS} heads of {HEAD_DIM} (`p`: rows padded to mixed lengths, masked):", "",
        "| rows x tokens | SDPA ms | onednn-graph ms | speed-up | SDPA mean abs error | onednn-graph mean abs error |",
        "|---|---|---|---|---|---|", *alone, "",
        f"Model core, preset `{args.preset}` (random weights), all three outputs, texts/s: median (slowest-fastest "
        "round):", "",
        "| workload | SDPA | onednn-graph | speed-up | dense cos, least | ColBERT cos, least |",
        "|---|---|---|---|---|---|", *in_model])
    publish(text, args.out, f"attention-{args.preset}-{args.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
