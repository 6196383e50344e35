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
    from bge_m3_triton.m3 import M3Model
    from bge_m3_triton.settings import ModelSettings
    from bge_m3_triton.testmodel import make_test_model

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
    overlap, weight_diff = [], []
    for a, b in zip(fp32, bf16):
        ids_a, ids_b = set(a.sparse_ids.tolist()), set(b.sparse_ids.tolist())
        overlap.append(len(ids_a & ids_b) / max(len(ids_a | ids_b), 1))
        common = sorted(ids_a & ids_b)
        wa = dict(zip(a.sparse_ids.tolist(), a.sparse_weights.tolist()))
        wb = dict(zip(b.sparse_ids.tolist(), b.sparse_weights.tolist()))
        weight_diff += [abs(wa[i] - wb[i]) / max(abs(wa[i]), 1e-6) for i in common]
    print(f"preset {args.preset}, {len(texts)} texts (16 of ~256 tokens, 16 of ~16)")
    print(f"dense cosine bf16 vs fp32: min {min(dense_cos):.5f}, mean {np.mean(dense_cos):.5f}")
    print(f"ColBERT vector cosine: min {colbert_cos.min():.4f}, mean {colbert_cos.mean():.5f}")
    print(f"sparse: token-set Jaccard mean {np.mean(overlap):.4f}; relative weight difference median "
          f"{np.median(weight_diff):.4f}, p99 {np.percentile(weight_diff, 99):.4f}")


if __name__ == "__main__":
    main()
