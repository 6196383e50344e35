"""The one loader of transformer checkpoints, for the BGE-M3 encoder and the cross-encoder alike:
find the checkpoint, pick device, dtype and threads, load with SDPA attention, and say clearly why
a checkpoint cannot be loaded."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bge_m3_triton.core import allocator, attention, checkpoint, compiling, devices, shared_weights
from bge_m3_triton.core.settings import ModelSettings

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Loaded:
    """A loaded model in eval mode on its device, where it came from, and the settings it runs with
    (the padded-token budget resolved for its device and dtype)."""

    folder: Path
    model: Any  # a transformers PreTrainedModel (a torch.nn.Module)
    device: torch.device
    dtype: torch.dtype
    settings: ModelSettings


def load_pretrained(settings: ModelSettings, auto_class: Any, what: str, required: Sequence[str] = ()) -> Loaded:
    """Load `settings.model` with a transformers auto class (`AutoModel`, ...); `what` names it in errors."""
    folder = checkpoint.resolve_checkpoint(settings.model, settings.revision, required=tuple(required))
    weights_file = checkpoint.encoder_weights_file(folder)
    device = devices.resolve_device("cpu" if settings.device == "auto" else settings.device)
    if device.type == "cpu":
        devices.configure_threads(settings.torch_threads)  # first: `dtype auto` times matmuls on these threads
        allocator.keep_freed_memory()
    dtype = devices.resolve_dtype(settings.dtype, device)
    try:
        model = auto_class.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa")
    except Exception as exc:
        raise checkpoint.CheckpointError(f"could not load the {what} from {folder.name!r}: "
                                         f"{type(exc).__name__}: {exc}") from None
    model = model.to(device).eval()
    compile_it = compiling.wanted(settings.compile, device, settings.dtype, dtype)
    if attention.wanted(settings.attention, device, dtype) and not compile_it:  # TorchScript inside inductor: no
        _use_fused_attention(model, dtype)
    mapped = None
    if settings.dtype == "int8":
        model = devices.quantize_int8(model)
    elif device.type == "cpu" and settings.share_weights == "on":
        key = shared_weights.weights_key([weights_file, folder / "config.json"], dtype, auto_class.__name__)
        mapped = shared_weights.share_weights(model, key)
    if compile_it:
        model = compiling.compile_model(model)
        if mapped is not None:  # its graphs run on their own packed copy: the module's pages can go
            LOG.info("released %.0f MiB of mapped weights (pages a compiled graph reads fault back in)",
                     shared_weights.release_pages(mapped) / 2**20)
    budget = devices.batch_token_budget(settings.max_batch_tokens, device, dtype)
    LOG.info("loaded %s %s on %s as %s with %s attention%s, sub-batches of up to %d padded tokens", what,
             settings.model, device, settings.dtype if settings.dtype == "int8" else dtype,
             model.config._attn_implementation, ", compiled by inductor" if compile_it else "", budget)
    return Loaded(folder, model, device, dtype, dataclasses.replace(settings, max_batch_tokens=budget))


def _use_fused_attention(model: Any, dtype: torch.dtype) -> None:
    heads = int(model.config.num_attention_heads)
    try:
        attention.prepare(heads, int(model.config.hidden_size) // heads, dtype)
    except RuntimeError as exc:
        LOG.warning("oneDNN Graph attention is not available (%s); running torch's SDPA", exc)
        return
    model.set_attn_implementation(attention.NAME)


def position_limit(config: Any) -> int:
    """The most tokens an XLM-R-style model takes: its positions start after the padding index,
    so 8194 positions hold 8192 tokens."""
    pad = int(getattr(config, "pad_token_id", 1) or 1)
    return int(config.max_position_embeddings) - pad - 1
