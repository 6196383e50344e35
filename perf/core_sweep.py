"""The model core alone (no Triton): throughput by token budget and sub-batch size, and where the time goes.

    .venv/bin/python perf/core_sweep.py [--preset small] [--dtype auto] [--compile auto]

For 64 passages (~256 tokens) and 64 queries (~16 tokens), all three outputs, in one `encode` call:
texts/s and share of the matmul ceiling for each padded-token budget (`max_batch_tokens`), and with
`max_batch_texts=1` (every text alone in its forward pass: batch-composition drift is then zero).
This VM's speed drifts within minutes, so the settings take turns: each round times one call of each,
and the table gives the median over the rounds (`--rounds`).
Then torch's profiler on one passages call, its self time grouped by kind of work, which says how much
of the gap to the ceiling is matmul and how much is attention and element-wise work.
"""

from __future__ import annotations

import dataclasses
import datetime
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

from perf.common import benchmark_checkpoint, machine, parser, publish

KINDS = (("matmul (Linear)", ("addmm", "mm", "linear", "matmul", "bmm", "onednn", "mkldnn", "quantized")),
         ("attention (SDPA)", ("attention", "sdpa", "flash", "softmax", "baddbmm")),
         ("GELU", ("gelu",)),
         ("layer norm", ("layer_norm",)),
         ("copies and layout", ("copy", "contiguous", "clone", "to", "cat", "index", "embedding", "view", "reshape",
                                "transpose", "permute", "expand", "pad", "slice", "select", "empty", "zeros", "fill")),
         ("element-wise", ("add", "mul", "div", "sub", "where", "relu", "max", "sum", "norm", "exp", "pow", "sqrt")))


def timed(model: Any, texts: list[str], lengths: list[int]) -> float:
    """Texts/s of one `encode` call on `texts`."""
    start = time.perf_counter()
    model.encode(texts, lengths)
    return len(texts) / (time.perf_counter() - start)


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, words in KINDS:
        if any(word in lowered for word in words):
            return kind
    return "other"


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--dtype", default="auto")
    options.add_argument("--compile", default="auto", choices=("auto", "off", "inductor"))
    options.add_argument("--budgets", default="1024,2048,4096,8192")
    options.add_argument("--rounds", type=int, default=5)
    args = options.parse_args()

    import torch

    from bge_m3_triton.core.m3 import M3Model
    from bge_m3_triton.core.settings import ModelSettings
    from bge_m3_triton.core.tokens import load_tokenizer
    from perf.ceiling import for_checkpoint
    from perf.corpus import make_texts

    checkpoint = benchmark_checkpoint(args.preset)
    tokenizer = load_tokenizer(checkpoint)
    passages, queries = make_texts(tokenizer, 64, 256, seed=2), make_texts(tokenizer, 64, 16, seed=1)
    lengths = [8192] * 64
    tokens = {name: sum(len(ids) for ids in tokenizer(texts)["input_ids"]) / 64
              for name, texts in (("passages", passages), ("queries", queries))}

    def load(**overrides: Any) -> Any:
        return M3Model.load(ModelSettings(model=str(checkpoint), dtype=args.dtype, device="cpu",
                                         compile=args.compile, **overrides))

    probe = load()
    compiled = hasattr(probe.encoder, "_orig_mod")  # torch.compile wraps the module
    ceiling = for_checkpoint(checkpoint, args.dtype, torch.get_num_threads())
    settings: list[tuple[str, dict[str, int]]] = [(f"budget {int(b):,} tokens", {"max_batch_tokens": int(b)})
                                                   for b in args.budgets.split(",")]
    settings.append(("each text alone (max_batch_texts=1)", {"max_batch_texts": 1}))
    default = probe.settings
    probe.encode(passages[:4], lengths[:4])  # warm-up
    rates: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        for label, overrides in settings:
            probe.settings = dataclasses.replace(default, **overrides)  # read by every `encode` call
            for name, texts in (("passages", passages), ("queries", queries)):
                rates[label, name].append(timed(probe, texts, lengths))
    probe.settings = default
    rows = []
    for label, _ in settings:
        median = {name: statistics.median(rates[label, name]) for name in ("passages", "queries")}
        share = {name: ceiling.share(rate * tokens[name]) for name, rate in median.items()}
        rows.append(f"| {label} | {median['passages']:.2f} | {share['passages']:.0%} "
                    f"| {median['queries']:.1f} | {share['queries']:.0%} |")

    from torch.profiler import ProfilerActivity, profile

    probe.encode(passages[:4], lengths[:4])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        probe.encode(passages, lengths)
        wall = time.perf_counter() - start
    spent: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::") or "mkldnn" in event.key or "quantized" in event.key:
            spent[kind_of(event.key)] += event.self_cpu_time_total / 1e6
    total = sum(spent.values())
    profile_rows = [f"| {kind} | {seconds:.2f} | {seconds / total:.0%} |"
                    for kind, seconds in sorted(spent.items(), key=lambda item: -item[1])]
    text = "\n".join([
        f"# model core sweep {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
        f"Machine: {machine()}; preset `{args.preset}`, dtype `{args.dtype}` (runs {ceiling.dtype}), "
        f"compile `{args.compile}` ({'inductor' if compiled else 'eager'}), "
        f"{torch.get_num_threads()} torch threads; 64 passages (~{tokens['passages']:.0f} tokens) and 64 queries "
        f"(~{tokens['queries']:.0f} tokens), all three outputs, one `encode` call each, medians of "
        f"{args.rounds} rounds.", "",
        ceiling.line(), "",
        "| sub-batches | passages/s | of ceiling | queries/s | of ceiling |", "|---|---|---|---|---|", *rows, "",
        f"Where one passages call's time goes (torch profiler, default settings; {wall:.2f} s wall with the "
        f"profiler on, self time of the aten ops summed over threads' parent ops):", "",
        "| work | seconds | share |", "|---|---|---|", *profile_rows])
    publish(text, args.out, f"core-{args.preset}-{ceiling.dtype.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
