"""Render the served model repository: our `config.pbtxt` files with deployment settings applied.

This is the one mechanism by which launcher flags and environment variables reach Triton: the
configs are parsed with Triton's own protobuf schema (`model_config.proto` from tritonclient),
changed, and written back, so a typo is an error here rather than a model that fails to load.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from bge_m3_triton.core.settings import (
    BY_NAME,
    CROSS_ENCODER,
    EMBED,
    MAX_BATCH_SIZE,
    RERANK,
    SETTINGS,
    STRUCTURAL,
)


class Deployment:
    """What a deployment changes in the shipped configs: a value per setting of `SETTINGS`, where an
    unset one (None) keeps the shipped value. `only_models` narrows the models served."""

    def __init__(self, only_models: list[str] | None = None, **values: Any) -> None:
        unknown = sorted(set(values) - set(BY_NAME))
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(unknown)}")
        self.values: dict[str, Any] = {name: values.get(name) for name in BY_NAME}
        self.only_models = only_models

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values")
        if values is None or name not in values:
            raise AttributeError(name)
        return values[name]

    def __setattr__(self, name: str, value: Any) -> None:
        if name in BY_NAME:
            self.values[name] = value
        else:
            super().__setattr__(name, value)

    def __repr__(self) -> str:
        chosen = {name: value for name, value in self.values.items() if value is not None}
        return f"Deployment({chosen}, only_models={self.only_models})"

    def value(self, name: str) -> Any:
        """The setting's value, or its documented default when unset."""
        value = self.values[name]
        return BY_NAME[name].default if value is None else value

    def models(self) -> list[str]:
        """The models this deployment serves: the cross-encoder only when one is named."""
        if self.only_models is not None:
            return list(self.only_models)
        return [EMBED, RERANK] + ([CROSS_ENCODER] if self.values["reranker"] else [])


def deployment_from_env(env: Mapping[str, str], base: Deployment | None = None) -> Deployment:
    """Apply every setting's environment variables (later names win; empty ones are ignored) on `base`."""
    deployment = base or Deployment()
    for setting in SETTINGS:
        for env_name in setting.env:
            raw = env.get(env_name, "").strip()
            if raw:
                setattr(deployment, setting.name, setting.parse(raw, f"environment variable {env_name}"))
    return deployment


def load_config(path: Path) -> mc.ModelConfig:
    """Parse a `config.pbtxt` with Triton's schema."""
    return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())


def render_config(config: mc.ModelConfig, deployment: Deployment) -> mc.ModelConfig:
    """Return a copy of `config` with the deployment's settings applied where `SETTINGS` says they land."""
    out = mc.ModelConfig()
    out.CopyFrom(config)
    values = dict(deployment.values)
    if out.name == RERANK and deployment.max_batch_size is not None:
        values["embed_max_batch_size"] = deployment.max_batch_size
    for setting in SETTINGS:
        value = values[setting.name]
        if value is None or out.name not in setting.models:
            continue
        target = setting.target
        if target == MAX_BATCH_SIZE:
            out.max_batch_size = value
        elif target not in STRUCTURAL:
            out.parameters[target].string_value = str(value)
    if out.name in BY_NAME["device"].models:
        del out.instance_group[:]
        group = out.instance_group.add()
        group.count = deployment.value("instances")
        gpu = _gpu_index(deployment.value("device"))
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
