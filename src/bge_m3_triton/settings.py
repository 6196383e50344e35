"""One settings object per model, built once from `config.pbtxt` parameters and the environment.

Precedence (lowest to highest): the defaults below, the model's `config.pbtxt` `parameters`,
then environment variables named `<MODEL_NAME>_<PARAMETER>` in upper case (for the model
`bge_m3`: `BGE_M3_MODEL`, `BGE_M3_DTYPE`, ...). The launcher writes parameters into a rendered
`config.pbtxt`; the environment is for people running a stock `tritonserver` on this repository.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

DTYPES = ("auto", "float32", "bfloat16", "float16")


class SettingsError(ValueError):
    """A parameter has a value we cannot use; the message names it."""


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Everything a served model needs to know, validated.

    `model` is a local folder or a Hugging Face hub id; `device` is `auto` (take the Triton
    instance's device), `cpu` or `cuda:N`; `max_batch_tokens` is the padded-token budget of one
    forward pass (rows x longest row); `max_batch_texts` caps rows per forward pass.
    """

    model: str = "BAAI/bge-m3"
    revision: str = ""
    dtype: str = "auto"
    device: str = "auto"
    query_max_length: int = 512
    passage_max_length: int = 8192
    max_batch_tokens: int = 4096
    max_batch_texts: int = 64
    max_text_bytes: int = 2_000_000
    max_response_bytes: int = 1 << 30
    torch_threads: int = 0
    embed_model: str = "bge_m3"

    def __post_init__(self) -> None:
        if not self.model:
            raise SettingsError("parameter 'model' must name a folder or a hub id")
        if self.dtype not in DTYPES:
            raise SettingsError(f"parameter 'dtype' must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise SettingsError(f"parameter 'device' must be auto, cpu or cuda:N, got {self.device!r}")
        for name in ("query_max_length", "passage_max_length", "max_batch_tokens", "max_batch_texts",
                     "max_text_bytes", "max_response_bytes"):
            if getattr(self, name) < 1:
                raise SettingsError(f"parameter {name!r} must be a positive integer, got {getattr(self, name)}")
        if self.torch_threads < 0:
            raise SettingsError("parameter 'torch_threads' must be 0 (automatic) or positive")

    @classmethod
    def from_sources(cls, parameters: Mapping[str, str], env: Mapping[str, str], model_name: str) -> ModelSettings:
        """Merge string parameters with `<MODEL_NAME>_<PARAM>` environment overrides and validate."""
        prefix = model_name.upper().replace("-", "_") + "_"
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(prefix + field.name.upper(), parameters.get(field.name))
            if raw is None:
                continue
            values[field.name] = _convert(field.name, str(raw), field.type)
        unknown = sorted(set(parameters) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise SettingsError(f"unknown parameter(s) in config.pbtxt: {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_triton_args(cls, args: Mapping[str, str], env: Mapping[str, str] | None = None) -> ModelSettings:
        """Build settings from the `args` Triton passes to `initialize`."""
        config = json.loads(args["model_config"])
        parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        settings = cls.from_sources(parameters, os.environ if env is None else env, args["model_name"])
        if settings.device == "auto":
            kind = args.get("model_instance_kind", "CPU")
            device = f"cuda:{args.get('model_instance_device_id', '0')}" if kind == "GPU" else "cpu"
            settings = dataclasses.replace(settings, device=device)
        return settings


def _convert(name: str, raw: str, kind: Any) -> Any:
    if kind in (int, "int"):
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"parameter {name!r} must be an integer, got {raw!r}") from None
    return raw.strip()
