"""Render the served model repository: our `config.pbtxt` files with deployment settings applied.

This is the one mechanism by which launcher flags and environment variables reach Triton: the
configs are parsed with Triton's own protobuf schema (`model_config.proto` from tritonclient),
changed, and written back, so a typo is an error here rather than a model that fails to load.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

EMBED, RERANK, CROSS_ENCODER = "bge_m3", "bge_m3_rerank", "bge_reranker"
WEIGHTED_MODELS = (EMBED, CROSS_ENCODER)


@dataclasses.dataclass
class Deployment:
    """What a deployment changes in the shipped configs; None keeps the shipped value."""

    model: str | None = None
    revision: str | None = None
    reranker: str | None = None
    dtype: str | None = None
    device: str = "cpu"
    instances: int = 1
    query_max_length: int | None = None
    passage_max_length: int | None = None
    max_batch_tokens: int | None = None
    max_batch_size: int | None = None
    queue_delay_us: int | None = None
    queue_timeout_us: int | None = None
    max_queue_size: int | None = None
    torch_threads: int | None = None
    only_models: list[str] | None = None

    def models(self) -> list[str]:
        """The models this deployment serves: the cross-encoder only when one is named."""
        if self.only_models is not None:
            return list(self.only_models)
        return [EMBED, RERANK] + ([CROSS_ENCODER] if self.reranker else [])


ENV_NAMES: dict[str, str] = {
    # our names, and the RunPod worker's where it had one
    "BGE_M3_MODEL": "model", "BGE_M3_REVISION": "revision", "BGE_RERANKER_MODEL": "reranker",
    "BGE_M3_DTYPE": "dtype", "GPU_DEVICE": "device", "BGE_M3_DEVICE": "device",
    "MAX_MODELS": "instances", "BGE_M3_INSTANCES": "instances",
    "BGE_M3_QUERY_MAX_LENGTH": "query_max_length", "BGE_M3_PASSAGE_MAX_LENGTH": "passage_max_length",
    "BGE_M3_MAX_BATCH_TOKENS": "max_batch_tokens", "BGE_M3_MAX_BATCH_SIZE": "max_batch_size",
    "BGE_M3_QUEUE_DELAY_US": "queue_delay_us", "BGE_M3_QUEUE_TIMEOUT_US": "queue_timeout_us",
    "BGE_M3_MAX_QUEUE_SIZE": "max_queue_size",
    "BGE_M3_TORCH_THREADS": "torch_threads",
}


def deployment_from_env(env: Mapping[str, str], base: Deployment | None = None) -> Deployment:
    """Apply the environment variables in `ENV_NAMES` (later names win) on top of `base`."""
    deployment = dataclasses.replace(base) if base else Deployment()
    fields = {field.name: field.type for field in dataclasses.fields(Deployment)}
    for env_name, field in ENV_NAMES.items():
        raw = env.get(env_name, "").strip()
        if not raw:
            continue
        is_int = "int" in str(fields[field]) and field not in ("device",)
        try:
            setattr(deployment, field, int(raw) if is_int else raw)
        except ValueError:
            raise ValueError(f"environment variable {env_name} must be an integer, got {raw!r}") from None
    return deployment


def load_config(path: Path) -> mc.ModelConfig:
    """Parse a `config.pbtxt` with Triton's schema."""
    return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())


def render_config(config: mc.ModelConfig, deployment: Deployment) -> mc.ModelConfig:
    """Return a copy of `config` with the deployment's settings applied."""
    out = mc.ModelConfig()
    out.CopyFrom(config)
    weighted = out.name in WEIGHTED_MODELS
    parameters = {
        "model": deployment.reranker if out.name == CROSS_ENCODER else deployment.model,
        "revision": deployment.revision if out.name == EMBED else None,
        "dtype": deployment.dtype,
        "query_max_length": deployment.query_max_length,
        "passage_max_length": deployment.passage_max_length,
        "max_batch_tokens": deployment.max_batch_tokens,
        "torch_threads": _threads(deployment),
    }
    for key, value in parameters.items():
        if value is not None and key in out.parameters:
            out.parameters[key].string_value = str(value)
    if deployment.max_batch_size is not None:
        out.max_batch_size = deployment.max_batch_size
    batching = out.dynamic_batching
    if deployment.queue_delay_us is not None:
        batching.max_queue_delay_microseconds = deployment.queue_delay_us
    if deployment.queue_timeout_us is not None:
        batching.default_queue_policy.default_timeout_microseconds = deployment.queue_timeout_us
    if deployment.max_queue_size is not None:
        batching.default_queue_policy.max_queue_size = deployment.max_queue_size
    if weighted:
        del out.instance_group[:]
        group = out.instance_group.add()
        group.count = deployment.instances
        gpu = _gpu_index(deployment.device)
        group.kind = mc.ModelInstanceGroup.KIND_CPU if gpu is None else mc.ModelInstanceGroup.KIND_GPU
        if gpu is not None and gpu >= 0:
            group.gpus.append(gpu)
    return out


def render_repository(source: Path, target: Path, deployment: Deployment) -> Path:
    """Copy the deployment's models from `source` into `target` with rendered configs."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in deployment.models():
        if not (source / name / "config.pbtxt").is_file():
            raise FileNotFoundError(f"model repository {source} has no {name}/config.pbtxt")
        shutil.copytree(source / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        config = render_config(load_config(source / name / "config.pbtxt"), deployment)
        (target / name / "config.pbtxt").write_text(text_format.MessageToString(config), encoding="utf-8")
    return target


def _gpu_index(device: str) -> int | None:
    """None for CPU; -1 for 'cuda'/'gpu' (every GPU); N for 'cuda:N'."""
    if device in ("", "cpu"):
        return None
    if device in ("cuda", "gpu"):
        return -1
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")


def _threads(deployment: Deployment) -> int | None:
    """On CPU, split the cores between instances unless threads were set explicitly."""
    if deployment.torch_threads is not None:
        return deployment.torch_threads
    if _gpu_index(deployment.device) is None and deployment.instances > 1:
        return max(1, len(os.sched_getaffinity(0)) // deployment.instances)
    return None
