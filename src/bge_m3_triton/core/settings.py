"""Every setting of a deployment, declared once, and the validated settings one served model runs with.

`SETTINGS` is the one table: name, type, default, bounds, command-line flag, environment names
(ours, then the RunPod sketch's), where the value lands in `config.pbtxt`, and which models take it.
The CLI flags, the environment parsing, the rendering of `config.pbtxt` and the README's table are
all generated from it; `ModelSettings` takes its defaults from it, and a test checks the shipped
`config.pbtxt` files against it.

Inside a model (`ModelSettings.from_sources`) the values come from the rendered `config.pbtxt`
parameters. `<MODEL_NAME>_<PARAMETER>` environment variables (`BGE_M3_DTYPE`, ...) override them
only when `BGE_M3_ENV_OVERRIDES=1` is set, for people running a stock `tritonserver` on this
repository; the launcher never sets it, so its rendered repository is the one truth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")
EMBED, RERANK, CROSS_ENCODER = "bge_m3", "bge_m3_rerank", "bge_reranker"
ALL_MODELS = (EMBED, RERANK, CROSS_ENCODER)
ENV_OVERRIDES = "BGE_M3_ENV_OVERRIDES"

# Where a setting lands in config.pbtxt: a `parameters` key, or one of these structural fields.
MAX_BATCH_SIZE = "max_batch_size"
INSTANCE_KIND, INSTANCE_COUNT = "instance_kind", "instance_count"
STRUCTURAL = (MAX_BATCH_SIZE, INSTANCE_KIND, INSTANCE_COUNT)


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names it and where it came from."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str
    kind: type
    default: Any
    help: str
    env: tuple[str, ...] = ()
    lands: str = ""  # a config.pbtxt parameter key or a STRUCTURAL name; "" = a model parameter named `name`
    models: tuple[str, ...] = ALL_MODELS
    minimum: int | None = None
    choices: tuple[str, ...] = ()
    flag: bool = True  # whether `bge-m3-triton serve/render` take it as --name-with-dashes

    @property
    def option(self) -> str:
        """The command-line flag."""
        return "--" + self.name.replace("_", "-")

    @property
    def target(self) -> str:
        """Where the value lands in config.pbtxt."""
        return self.lands or self.name

    def parse(self, raw: Any, source: str) -> Any:
        """Convert and check a value; `source` names where it came from for the error message."""
        if self.kind is int:
            try:
                value: Any = int(str(raw).strip())
            except ValueError:
                raise SettingsError(f"{source} must be an integer, got {raw!r}") from None
            if self.minimum is not None and value < self.minimum:
                raise SettingsError(f"{source} must be at least {self.minimum}, got {value}")
            return value
        value = str(raw).strip()
        if self.choices and value not in self.choices:
            raise SettingsError(f"{source} must be one of {', '.join(self.choices)}, got {value!r}")
        return value


_W = (EMBED, CROSS_ENCODER)  # the models that hold weights
SETTINGS: tuple[Setting, ...] = (
    Setting("model", str, "BAAI/bge-m3", "BGE-M3 checkpoint: hub id or local folder", ("BGE_M3_MODEL",),
            models=(EMBED,)),
    Setting("revision", str, "", "hub revision of --model (branch, tag or commit)", ("BGE_M3_REVISION",),
            models=(EMBED,)),
    Setting("reranker", str, "", "cross-encoder checkpoint (e.g. BAAI/bge-reranker-v2-m3); served only when set",
            ("BGE_RERANKER_MODEL",), lands="model", models=(CROSS_ENCODER,)),
    Setting("dtype", str, "auto", "weights' dtype; auto: bf16 on GPUs and on CPUs whose torch runs bf16 "
            "natively and faster than fp32 (timed at start: AVX512-BF16 on a Xeon without AMX ran 0.6-0.8x), else "
            "fp32; int8 (opt-in, CPU): static int8 on the OpenVINO engine, dynamic int8 Linear layers on torch "
            "(docs/decisions/012-openvino-engine.md)",
            ("BGE_M3_DTYPE",), models=_W, choices=DTYPES),
    Setting("engine", str, "auto", "what runs the transformer on CPU: torch, or OpenVINO's CPU plugin (its IR "
            "converted once and kept beside the shared weights); auto: OpenVINO for bf16 and int8 on CPUs with "
            "native bf16 and no AMX, else torch (docs/decisions/012-openvino-engine.md); GPUs: torch",
            ("BGE_M3_ENGINE",), models=_W, choices=("auto", "torch", "openvino")),
    Setting("attention", str, "auto", "CPU self-attention: torch's SDPA, or oneDNN Graph's fused attention; auto: "
            "onednn-graph for bf16 on CPUs without AMX (passages 1.04-1.07x, 1,500-token texts 1.23x on an AMD EPYC), "
            "else sdpa (with AMX, onednn-graph ran 0.93x)", ("BGE_M3_ATTENTION",), models=_W,
            choices=("auto", "sdpa", "onednn-graph")),
    Setting("compile", str, "auto", "torch.compile the model at start with inductor (CPU, not int8; 25-80 s at "
            "start, a second copy of the Linear weights per instance); auto: inductor for bf16 on CPUs with AMX "
            "where g++ is on PATH (1.1-1.2x passages, lone queries ~1.5x faster), else off",
            ("BGE_M3_COMPILE",), models=_W, choices=("auto", "off", "inductor")),
    Setting("device", str, "cpu", "cpu, cuda (every GPU) or cuda:N", ("GPU_DEVICE", "BGE_M3_DEVICE"),
            lands=INSTANCE_KIND, models=_W),
    Setting("instances", int, 1, "model instances (processes); each batches continuously on its own forward "
            "thread, so one serves a CPU host or a GPU (README: Latency)", ("MAX_MODELS", "BGE_M3_INSTANCES"),
            lands=INSTANCE_COUNT, models=_W, minimum=1),
    Setting("forward_slots", int, 1, "CPU: how many instances may run a forward pass at once, each with the "
            "cores divided by this (0: no limit, the cores divided by the instances)",
            ("BGE_M3_FORWARD_SLOTS",), models=_W, minimum=0),
    Setting("share_weights", str, "on", "CPU: the instances map one copy of the converted weights (a file in "
            "$BGE_M3_SHARED_WEIGHTS_DIR, default $TMPDIR/bge-m3-triton-weights) instead of one copy each",
            ("BGE_M3_SHARE_WEIGHTS",), models=_W, choices=("on", "off")),
    Setting("query_max_length", int, 512, "default max tokens of a query", ("BGE_M3_QUERY_MAX_LENGTH",),
            models=(EMBED, RERANK), minimum=2),
    Setting("passage_max_length", int, 8192, "default max tokens of a passage", ("BGE_M3_PASSAGE_MAX_LENGTH",),
            models=(EMBED, RERANK), minimum=2),
    Setting("reranker_max_length", int, 512, "default max tokens of a cross-encoder (query, passage) pair",
            ("BGE_RERANKER_MAX_LENGTH",), lands="passage_max_length", models=(CROSS_ENCODER,), minimum=4),
    Setting("max_batch_tokens", int, 0, "padded-token budget of one forward pass (rows x longest row); 0: by "
            "device and dtype, CPU 2,048 in bf16, 1,024 in fp32 and int8, GPU 4,096 (README: CPU defaults)",
            ("BGE_M3_MAX_BATCH_TOKENS",), models=_W, minimum=0),
    Setting("max_batch_texts", int, 64, "rows of one forward pass at most", ("BGE_M3_MAX_BATCH_TEXTS",),
            models=_W, minimum=1),
    Setting("max_batch_size", int, 64, "texts per request and per batch", ("BGE_M3_MAX_BATCH_SIZE",),
            lands=MAX_BATCH_SIZE, minimum=1),
    Setting("queue_delay_us", int, 5000, "how long a model, once free, waits for as many requests as were in "
            "it during its previous batch; a request that finds it idle goes at once (README: Latency)",
            ("BGE_M3_QUEUE_DELAY_US",), models=_W, minimum=0),
    Setting("queue_timeout_us", int, 60_000_000, "requests queued longer than this are refused (a request's own "
            "timeout, when it sets one, wins; 0: no limit)", ("BGE_M3_QUEUE_TIMEOUT_US",), models=_W, minimum=0),
    Setting("max_queue_size", int, 1024, "requests beyond this many queued are refused (0: no limit)",
            ("BGE_M3_MAX_QUEUE_SIZE",), models=_W, minimum=0),
    Setting("drain_seconds", int, 25, "on SIGTERM, how long the queued and running requests may take to finish; "
            "then the rest are answered UNAVAILABLE and the server exits 0. Triton's exit timeout is set past it "
            "and Kubernetes' termination grace must be too (docs/reliability.md)", ("BGE_M3_DRAIN_SECONDS",),
            models=_W, minimum=0),
    Setting("torch_threads", int, 0, "intra-op threads per instance; 0: the cores divided by the forward slots",
            ("BGE_M3_TORCH_THREADS",), models=_W, minimum=0),
    Setting("max_text_bytes", int, 2_000_000, "largest text accepted, UTF-8 bytes", ("BGE_M3_MAX_TEXT_BYTES",),
            minimum=1),
    Setting("max_response_bytes", int, 1 << 30, "largest embed response (long ColBERT outputs are refused)",
            ("BGE_M3_MAX_RESPONSE_BYTES",), models=(EMBED,), minimum=1),
    # Wiring between the models, rendered from the settings above rather than set.
    Setting("embed_model", str, EMBED, "the embed model the rerank model calls over BLS", models=(RERANK,),
            flag=False),
    Setting("embed_max_batch_size", int, 64, "the embed model's max_batch_size (the rerank model's BLS chunks)",
            models=(RERANK,), minimum=1, flag=False),
)
BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


@dataclasses.dataclass(frozen=True)
class ProcessVariable:
    """An environment variable a process reads that is no model setting (nothing in config.pbtxt)."""

    name: str
    read_by: str
    what: str


# Every environment variable of ours a process reads beyond the settings' (`Setting.env`), declared here
# (a test finds every read in the source and checks it is declared).
PROCESS_VARIABLES: tuple[ProcessVariable, ...] = (
    ProcessVariable("BGE_M3_SHARED_WEIGHTS_DIR", "each CPU model instance",
                    "where the instances' shared weight files go (default: $TMPDIR/bge-m3-triton-weights)"),
    ProcessVariable("BGE_M3_MODEL_REPOSITORY", "the launcher", "the source model repository (default: this "
                    "checkout's model_repository/; the image sets it)"),
    ProcessVariable("BGE_M3_ENV_OVERRIDES", "each model instance", "1: `<MODEL>_<PARAMETER>` variables override "
                    "config.pbtxt, for a stock tritonserver run on this repository (the launcher ignores it)"),
    ProcessVariable("TRITONSERVER", "the launcher", "a tritonserver binary to run instead of the nvidia-pytriton "
                    "wheel's (NVIDIA's image: /opt/tritonserver/bin/tritonserver)"),
    ProcessVariable("TRITON_BACKEND_DIR", "the launcher", "that install's backend folder (default: beside its bin/)"),
)


def environment_table() -> str:
    """docs/configuration.md's table of the other environment variables."""
    lines = ["| variable | read by | what it sets |", "|---|---|---|"]
    lines += [f"| `{v.name}` | {v.read_by} | {v.what} |" for v in PROCESS_VARIABLES]
    return "\n".join(lines) + "\n"


def default(name: str) -> Any:
    """A setting's documented default (the value the shipped config.pbtxt holds)."""
    return BY_NAME[name].default


def markdown_table() -> str:
    """The README's configuration table."""
    lines = ["| flag | environment | default | models | what it sets |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        if not s.flag:
            continue
        env = ", ".join(f"`{name}`" for name in s.env)
        shown = f"`{s.default}`" if s.default != "" else "(none)"
        choices = f" ({' / '.join(s.choices)})" if s.choices else ""
        lines.append(f"| `{s.option}` | {env} | {shown} | {', '.join(s.models)} | {s.help}{choices} |")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Everything a served model needs to know, validated; defaults from `SETTINGS`.

    `model` is a local folder or a Hugging Face hub id; `device` is `auto` (take the Triton
    instance's device), `cpu` or `cuda:N`.
    """

    model: str = default("model")
    revision: str = default("revision")
    dtype: str = default("dtype")
    engine: str = default("engine")
    attention: str = default("attention")
    compile: str = default("compile")
    device: str = "auto"
    query_max_length: int = default("query_max_length")
    passage_max_length: int = default("passage_max_length")
    max_batch_tokens: int = default("max_batch_tokens")
    max_batch_texts: int = default("max_batch_texts")
    queue_delay_us: int = default("queue_delay_us")
    queue_timeout_us: int = default("queue_timeout_us")
    max_queue_size: int = default("max_queue_size")
    drain_seconds: int = default("drain_seconds")
    max_text_bytes: int = default("max_text_bytes")
    max_response_bytes: int = default("max_response_bytes")
    torch_threads: int = default("torch_threads")
    forward_slots: int = default("forward_slots")
    share_weights: str = default("share_weights")
    embed_model: str = default("embed_model")
    embed_max_batch_size: int = default("embed_max_batch_size")

    def __post_init__(self) -> None:
        if not self.model:
            raise SettingsError("parameter 'model' must name a folder or a hub id")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise SettingsError(f"parameter 'device' must be auto, cpu or cuda:N, got {self.device!r}")
        for field in dataclasses.fields(self):
            setting = _PARAMETERS.get(field.name)
            if setting is not None:
                setting.parse(getattr(self, field.name), f"parameter {field.name!r}")

    @classmethod
    def from_sources(cls, parameters: Mapping[str, str], env: Mapping[str, str], model_name: str) -> ModelSettings:
        """Validate the `config.pbtxt` parameters; `<MODEL_NAME>_<PARAM>` variables override them only
        when `BGE_M3_ENV_OVERRIDES=1` is in `env`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(parameters) - known)
        if unknown:
            raise SettingsError(f"unknown parameter(s) in config.pbtxt: {', '.join(unknown)}")
        overrides = env.get(ENV_OVERRIDES, "").strip().lower() in ("1", "true", "yes")
        prefix = model_name.upper().replace("-", "_") + "_"
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw, source = parameters.get(field.name), f"parameter {field.name!r}"
            if overrides and prefix + field.name.upper() in env:
                raw, source = env[prefix + field.name.upper()], f"environment variable {prefix + field.name.upper()}"
            if raw is None:
                continue
            setting = _PARAMETERS.get(field.name)
            values[field.name] = setting.parse(raw, source) if setting else str(raw).strip()
        return cls(**values)


# The model parameters' validation rules, by parameter key (a setting may land under another key).
_PARAMETERS: dict[str, Setting] = {}
for _setting in SETTINGS:
    if _setting.target not in STRUCTURAL:
        _PARAMETERS.setdefault(_setting.target, _setting)
