"""What one Triton model instance is: its settings (from its config.pbtxt), its device, the instances that
compute beside it, its runtime plan (core.plan), its forward gate, and its model, loaded off the stub's
main thread. `model.py` files call these in `initialize`; everything here reads Triton's `args`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from bge_m3_client.contract import config_parameters
from bge_m3_triton.core.plan import MachineFacts, RuntimePlan, plan
from bge_m3_triton.core.settings import ModelSettings
from bge_m3_triton.serving.forward_gate import ForwardGate

LOG = logging.getLogger(__name__)
Loaded = TypeVar("Loaded", covariant=True)


class Loadable(Protocol[Loaded]):
    """A model class of the core: `M3Model`, `CrossEncoder`."""

    def load(self, settings: ModelSettings, runtime_plan: RuntimePlan | None = None) -> Loaded: ...


def log_to_server() -> None:
    """Send this package's log records from INFO up to the stub's stderr, which Triton writes to its own log
    (Python's default would drop the INFO lines that say what was loaded: the plan, the budget)."""
    root = logging.getLogger("bge_m3_triton")
    if not any(getattr(handler, "bge_m3_server_log", False) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"))
        handler.bge_m3_server_log = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def settings_from_args(args: Mapping[str, str], env: Mapping[str, str] | None = None) -> ModelSettings:
    """The model's settings from the `args` Triton passes to `initialize` (its config's parameters), as
    configured: what the instance runs with is its runtime plan (`load_model`). From here on the package
    logs to the server's log."""
    log_to_server()
    parameters = config_parameters(json.loads(args["model_config"]))
    settings = ModelSettings.from_sources(parameters, os.environ if env is None else env, args["model_name"])
    LOG.info("%s is configured with %s", args["model_name"], settings)
    return settings


def instance_device(args: Mapping[str, str], settings: ModelSettings) -> str:
    """The instance's device: `device auto` is the Triton instance's own (its kind and device id), else as set
    (`cuda` is the first GPU)."""
    if settings.device == "auto":
        kind = args.get("model_instance_kind", "CPU")
        return f"cuda:{args.get('model_instance_device_id', '0')}" if kind == "GPU" else "cpu"
    return "cuda:0" if settings.device == "cuda" else settings.device


def computing_instances(args: Mapping[str, str], settings: ModelSettings) -> int:
    """How many instances run forward passes at once on this host's cores: the forward slots, or every
    instance of the model when the slots are unlimited (0)."""
    config = json.loads(args["model_config"])
    instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
    return min(instances, settings.forward_slots) if settings.forward_slots else instances


def forward_gate(args: Mapping[str, str], settings: ModelSettings) -> Callable[[], AbstractContextManager[Any]]:
    """What a model holds around each forward pass: a slot of the server's `ForwardGate` when it runs on
    CPU with limited forward slots, else nothing."""
    if instance_device(args, settings) != "cpu" or settings.forward_slots == 0:
        return contextlib.nullcontext
    return ForwardGate.for_repository(args["model_repository"], settings.forward_slots).hold


def max_batch_size(args: Mapping[str, str]) -> int:
    """The model config's `max_batch_size`: texts per request at most, and per batch the collector forms."""
    return int(json.loads(args["model_config"]).get("max_batch_size", 0)) or 64


def load_model(args: Mapping[str, str], settings: ModelSettings, model_class: Loadable[Loaded]) -> Loaded:
    """The instance's model: the machine's facts gathered, the runtime plan made and logged, the model loaded
    as it says, all off the stub's main thread (`off_main_thread`)."""
    def load() -> Loaded:
        facts = MachineFacts.gather(settings, instance_device(args, settings), computing_instances(args, settings))
        runtime_plan = plan(settings, facts)
        LOG.info("%s runs with %s", args["model_name"], runtime_plan.describe())
        return model_class.load(settings, runtime_plan)

    return off_main_thread(load)


Result = TypeVar("Result")


def off_main_thread(work: Callable[[], Result]) -> Result:
    """`work()` run on a thread of its own that then exits, so the thread that calls `execute` never starts
    an OpenMP team. libgomp keeps one team per thread that starts parallel work; with a second team in the
    process its threads outnumber 2 cores, it throttles their spinning, and every parallel region of the
    forward thread pays a futex wake-up: a lone 16-token query took 1.3-1.6x the bare forward pass. A
    finished thread's team goes with it, so the forward thread's is the only one."""
    result: list[Result] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # re-raised on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="bge-m3-load")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
