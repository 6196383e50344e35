"""How far bf16 outputs are from fp32 on the same checkpoint (the numbers quoted in the README).

    .venv/bin/python perf/bf16_vs_fp32.py [--preset full]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus import make_texts  # noqa: E402


def main() -> None:
    from bge_m3_triton.core.m3 import M3Model
    from bge_m3_triton.core.settings import ModelSettings
    from bge_m3_triton.ops.testmodel import make_test_model

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="full", choices=("small", "full"))
    args = parser.parse_args()
    checkpoint = HERE.parent / ".cache" / "perf-models" / args.preset
    if not (checkpoint / "config.json").is_file():
        make_test_model(checkpoint, args.preset, seed=0)
    models = {dtype: M3Model.load(ModelSettings(model=str(checkpoint), dtype=dtype, device="cpu"))
              for dtype in ("float32", "bfloat16")}
    texts = make_texts(models["float32"].tokenizer, 16, 256, seed=5) + make_texts(models["float32"].tokenizer, 16, 16,
                                                                                 seed=6)
    fp32, bf16 = (models[d].encode(texts, [8192] * len(texts)) for d in ("float32", "bfloat16"))
    dense_cos = [float(np.dot(a.dense, b.dense)) for a, b in zip(fp32, bf16)]
    colbert_cos = np.concatenate([(a.colbert * b.colbert).sum(axis=1) for a, b in zip(fp32, bf16)])
    overlap, top_overlap, weight_diff = [], [], []
    for a, b in zip(fp32, bf16):
        wa = dict(zip(a.sparse_ids.tolist(), a.sparse_weights.tolist()))
        wb = dict(zip(b.sparse_ids.tolist(), b.sparse_weights.tolist()))
        overlap.append(len(wa.keys() & wb.keys()) / max(len(wa.keys() | wb.keys()), 1))
        top_a, top_b = (set(sorted(w, key=w.__getitem__)[-10:]) for w in (wa, wb))
        top_overlap.append(len(top_a & top_b) / max(len(top_a), 1))
        scale = max(wa.values(), default=1.0)
        weight_diff += [abs(wa.get(i, 0.0) - wb.get(i, 0.0)) / scale for i in wa.keys() | wb.keys()]
    print(f"preset {args.preset}, {len(texts)} texts (16 of ~256 tokens, 16 of ~16)")
    print(f"dense cosine bf16 vs fp32: min {min(dense_cos):.5f}, mean {np.mean(dense_cos):.5f}")
    print(f"ColBERT vector cosine: min {colbert_cos.min():.4f}, mean {colbert_cos.mean():.5f}")
    print(f"sparse: token-set Jaccard mean {np.mean(overlap):.3f}; top-10 tokens shared {np.mean(top_overlap):.3f}; "
          f"|weight difference| / the text's largest weight: median {np.median(weight_diff):.4f}, "
          f"p99 {np.percentile(weight_diff, 99):.4f}")


if __name__ == "__main__":
    main()
