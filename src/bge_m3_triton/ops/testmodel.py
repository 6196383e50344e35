"""Random-weight checkpoints in BAAI/bge-m3's exact file layout, with the real XLM-R tokenizer.

Compute cost does not depend on weight values, so `full` (BGE-M3's real shape) is a fair benchmark
model; correctness is proven by parity with FlagEmbedding on the same files. `--reranker` writes an
XLMRobertaForSequenceClassification cross-encoder (bge-reranker-v2-m3's layout) instead.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import torch

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64},
    "small": {"num_hidden_layers": 6, "hidden_size": 1024, "num_attention_heads": 16, "intermediate_size": 4096},
    "full": {"num_hidden_layers": 24, "hidden_size": 1024, "num_attention_heads": 16, "intermediate_size": 4096},
}
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "tokenizer_config.json")
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                  "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}


def tokenizer_folder() -> Path:
    """The XLM-R tokenizer files shipped inside this package."""
    return Path(str(resources.files("bge_m3_triton") / "assets" / "xlmr-tokenizer"))


def make_test_model(folder: Path, preset: str = "tiny", seed: int = 0, reranker: bool = False,
                    weights_format: str = "safetensors", overrides: dict[str, Any] | None = None) -> Path:
    """Write a deterministic random checkpoint for `seed` into `folder` and return it; `overrides`
    change the preset's `XLMRobertaConfig` fields (another encoder's shape)."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaModel

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose {', '.join(PRESETS)}")
    if weights_format not in ("safetensors", "bin"):
        raise ValueError("weights_format must be 'safetensors' or 'bin'")
    folder.mkdir(parents=True, exist_ok=True)
    fields: dict[str, Any] = {
        "vocab_size": 250002, "max_position_embeddings": 8194, "type_vocab_size": 1, "layer_norm_eps": 1e-5,
        "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "gelu", "num_labels": 1,
        "architectures": ["XLMRobertaForSequenceClassification" if reranker else "XLMRobertaModel"],
        **PRESETS[preset], **(overrides or {}),
    }
    config = XLMRobertaConfig(**fields)
    torch.manual_seed(seed)
    model_class = XLMRobertaForSequenceClassification if reranker else XLMRobertaModel
    model = model_class(config).eval()
    model.save_pretrained(folder)
    if weights_format == "bin":  # transformers 5 writes safetensors only; BAAI's repo also has this form
        from safetensors.torch import load_file

        torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    if not reranker:
        hidden = config.hidden_size
        colbert = torch.nn.Linear(hidden, hidden)
        sparse = torch.nn.Linear(hidden, 1)
        # BAAI ships both heads in fp16; keep that so loading casts as it does for the real files.
        torch.save({k: v.half() for k, v in colbert.state_dict().items()}, folder / "colbert_linear.pt")
        torch.save({k: v.half() for k, v in sparse.state_dict().items()}, folder / "sparse_linear.pt")
    source = tokenizer_folder()
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, folder / name)
    (folder / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS, indent=2), encoding="utf-8")
    return folder
