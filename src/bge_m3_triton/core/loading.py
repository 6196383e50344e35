"""The one loader of transformer checkpoints, for the BGE-M3 encoder and the cross-encoder alike: find the
checkpoint, carry out the runtime plan (core.plan: device, dtype, threads, attention, int8, shared
weights, compiling), and say clearly why a checkpoint cannot be loaded."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bge_m3_triton.core import allocator, attention, checkpoint, compiling, devices, shared_weights
from bge_m3_triton.core.plan import MachineFacts, RuntimePlan, plan
from bge_m3_triton.core.settings import ModelSettings

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Loaded:
    """A loaded model in eval mode on its device, where it came from, the plan it runs with, and its settings
    (the padded-token budget set to the plan's)."""

    folder: Path
    model: Any  # a transformers PreTrainedModel (a torch.nn.Module)
    device: torch.device
    dtype: torch.dtype
    settings: ModelSettings
    plan: RuntimePlan


def plan_for(settings: ModelSettings) -> RuntimePlan:
    """The runtime plan of a model loaded outside a Triton instance (tools, tests): `device auto` is the CPU."""
    device = "cpu" if settings.device == "auto" else settings.device
    runtime_plan = plan(settings, MachineFacts.gather(settings, device))
    LOG.info("runtime plan: %s", runtime_plan.describe())
    return runtime_plan


def load_pretrained(settings: ModelSettings, auto_class: Any, what: str, required: Sequence[str] = (),
                    runtime_plan: RuntimePlan | None = None) -> Loaded:
    """Load `settings.model` with a transformers auto class (`AutoModel`, ...) as `runtime_plan` says (the
    plan for `settings` on this machine when none is given); `what` names the model in errors."""
    runtime_plan = runtime_plan or plan_for(settings)
    folder = checkpoint.resolve_checkpoint(settings.model, settings.revision, required=tuple(required))
    weights_file = checkpoint.encoder_weights_file(folder)
    device = devices.resolve_device(runtime_plan.device)
    if runtime_plan.threads:
        devices.configure_threads(runtime_plan.threads)
    if runtime_plan.keep_freed_memory:
        allocator.keep_freed_memory()
    if runtime_plan.engine == "openvino":
        return _load_openvino(settings, auto_class, what, runtime_plan, folder, [weights_file, folder / "config.json"])
    dtype = devices.TORCH_DTYPES[runtime_plan.dtype]
    model = _from_pretrained(auto_class, folder, dtype, what).to(device).eval()
    if runtime_plan.attention == "onednn-graph":
        _use_fused_attention(model, dtype)
    mapped = None
    if runtime_plan.dtype == "int8":
        model = devices.quantize_int8(model)
    elif runtime_plan.share_weights:
        key = shared_weights.weights_key([weights_file, folder / "config.json"], dtype, auto_class.__name__)
        mapped = shared_weights.share_weights(model, key)
    if runtime_plan.compile:
        model = compiling.compile_model(model)
        if mapped is not None:  # its graphs run on their own packed copy: the module's pages can go
            LOG.info("released %.0f MiB of mapped weights (pages a compiled graph reads fault back in)",
                     shared_weights.release_pages(mapped) / 2**20)
    LOG.info("loaded %s %s on %s as %s with %s attention%s, sub-batches of up to %d padded tokens", what,
             settings.model, device, runtime_plan.dtype, model.config._attn_implementation,
             ", compiled by inductor" if runtime_plan.compile else "", runtime_plan.max_batch_tokens)
    return Loaded(folder, model, device, dtype,
                  dataclasses.replace(settings, max_batch_tokens=runtime_plan.max_batch_tokens), runtime_plan)


def _from_pretrained(auto_class: Any, folder: Path, dtype: torch.dtype, what: str) -> Any:
    try:
        return auto_class.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa")
    except Exception as exc:
        raise checkpoint.CheckpointError(f"could not load the {what} from {folder.name!r}: "
                                         f"{type(exc).__name__}: {exc}") from None


def _load_openvino(settings: ModelSettings, auto_class: Any, what: str, runtime_plan: RuntimePlan, folder: Path,
                   files: list[Path]) -> Loaded:
    """The transformer run by OpenVINO (core.openvino_engine): the torch model is loaded (in fp32) only
    when its IR has to be built; the model core's heads then run in fp32 on the engine's fp32 output."""
    from transformers import AutoConfig

    from bge_m3_triton.core import openvino_engine
    from bge_m3_triton.core.tokens import load_tokenizer

    try:
        config = AutoConfig.from_pretrained(folder)
    except Exception as exc:
        raise checkpoint.CheckpointError(f"could not load the {what} from {folder.name!r}: "
                                         f"{type(exc).__name__}: {exc}") from None
    output = "last_hidden_state" if auto_class.__name__ == "AutoModel" else "logits"
    model = openvino_engine.load(files, runtime_plan.dtype, runtime_plan.threads, output,
                                 lambda: _from_pretrained(auto_class, folder, torch.float32, what),
                                 lambda: load_tokenizer(folder), config, position_limit(config))
    LOG.info("loaded %s %s on OpenVINO's CPU plugin as %s, sub-batches of up to %d padded tokens", what,
             settings.model, runtime_plan.dtype, runtime_plan.max_batch_tokens)
    return Loaded(folder, model, torch.device("cpu"), torch.float32,
                  dataclasses.replace(settings, max_batch_tokens=runtime_plan.max_batch_tokens), runtime_plan)


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
