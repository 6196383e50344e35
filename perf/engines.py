"""Engines and precisions side by side on the model core alone (no Triton): passages/s, taking turns.

    .venv/bin/python -m perf engines [--preset small] [--rounds 3]
        [--precisions bfloat16,bfloat16+openvino,int8+openvino,int8+openvino+weights]

Each precision spec is loaded once (perf/common.py's `precision_settings`: a dtype with `+openvino`, an int8
recipe, an attention), then every round times each in turn on the same ~256-token passages, 8 per `encode`
call, all three outputs, for `--seconds`; the table gives the median over the rounds and each against the
first spec. Through Triton, with 16 concurrent requests and the ceiling's share: `python -m perf concurrency
--compare "openvino=--engine openvino"`. Fidelity of the same specs: `python -m perf fidelity --encoder e5`.
"""

from __future__ import annotations

import datetime
import statistics
import sys

from perf.common import benchmark_checkpoint, machine, parser, precision_settings, publish


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--precisions", default="bfloat16,bfloat16+openvino,int8+openvino,int8+openvino+weights")
    options.add_argument("--rounds", type=int, default=3)
    options.add_argument("--seconds", type=float, default=10.0)
    args = options.parse_args()

    from bge_m3_triton.core.m3 import M3Model
    from bge_m3_triton.core.tokens import load_tokenizer
    from perf.concurrency import core_rate
    from perf.corpus import make_texts

    checkpoint = benchmark_checkpoint(args.preset)
    texts = make_texts(load_tokenizer(checkpoint), 32, 256, seed=2)
    specs = args.precisions.split(",")
    models = {}
    for spec in specs:  # each keeps its own engine; a later spec's int8 recipe does not touch a loaded model
        models[spec] = M3Model.load(precision_settings(spec, checkpoint))
        core_rate(models[spec], texts[:8], 0)  # warm-up
    rates: dict[str, list[float]] = {spec: [] for spec in specs}
    for number in range(args.rounds):
        for spec in specs:
            rates[spec].append(core_rate(models[spec], texts, args.seconds))
        print(f"[engines] round {number + 1}: " + ", ".join(f"{s} {rates[s][-1]:.2f}" for s in specs), flush=True)
    first = specs[0]
    lines = [f"# engines on the model core {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             f"Machine: {machine()}; preset `{args.preset}` (random weights); 32 passages of ~256 tokens, 8 per "
             f"`encode` call, all three outputs, {args.seconds:.0f} s per spec per round, {args.rounds} rounds "
             f"taking turns (`python -m perf engines --precisions {args.precisions}`).", "",
             f"| spec | passages/s (median) | each round | vs {first} (median of the rounds' ratios) |",
             "|---|---|---|---|"]
    for spec in specs:
        ratio = statistics.median(a / b for a, b in zip(rates[spec], rates[first]))
        lines.append(f"| {spec} | {statistics.median(rates[spec]):.2f} | "
                     f"{', '.join(f'{r:.2f}' for r in rates[spec])} | {ratio:.2f}x |")
    publish("\n".join(lines), args.out, f"engines-{args.preset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
