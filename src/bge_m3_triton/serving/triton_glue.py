"""Batch execution for Python-backend models: every request gets its own response, errors stay per request.

`triton_python_backend_utils` exists only inside Triton's stub, so it is passed in (`pb`), which
also lets the unit tests use a stand-in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

import numpy as np

from bge_m3_client.contract import config_parameters
from bge_m3_triton.core.settings import ModelSettings
from bge_m3_triton.serving.forward_gate import ForwardGate
from bge_m3_triton.serving.params import InvalidRequest, RequestParams

LOG = logging.getLogger(__name__)
# The Python backend's custom metrics are not safe to update from two threads of a stub at once: each
# update is a message to the Triton process, and concurrent ones crashed it (signal 11 in
# libtriton_python.so, Triton 2.51). Every metric update of this process holds this lock.
METRIC_LOCK = threading.Lock()
Job = TypeVar("Job")
Outputs = dict[str, np.ndarray]


def log_to_server() -> None:
    """Send this package's log records from INFO up to the stub's stderr, which Triton writes to its own log
    (Python's default would drop the INFO lines that say what was loaded: dtype, attention, budget)."""
    root = logging.getLogger("bge_m3_triton")
    if not any(getattr(handler, "bge_m3_server_log", False) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"))
        handler.bge_m3_server_log = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def settings_from_args(args: Mapping[str, str], env: Mapping[str, str] | None = None) -> ModelSettings:
    """The model's settings from the `args` Triton passes to `initialize` (its config's parameters); from
    here on the package logs to the server's log (`log_to_server`).

    `device: auto` becomes the Triton instance's device. On CPU, `torch_threads: 0` becomes the cores
    this process may use divided by the instances that compute at once: the forward slots, or every
    instance of the model when the slots are unlimited (0)."""
    log_to_server()
    config = json.loads(args["model_config"])
    parameters = config_parameters(config)
    settings = ModelSettings.from_sources(parameters, os.environ if env is None else env, args["model_name"])
    if settings.device == "auto":
        kind = args.get("model_instance_kind", "CPU")
        device = f"cuda:{args.get('model_instance_device_id', '0')}" if kind == "GPU" else "cpu"
        settings = dataclasses.replace(settings, device=device)
    if settings.device == "cpu" and settings.torch_threads == 0:
        instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
        computing = min(instances, settings.forward_slots) if settings.forward_slots else instances
        settings = dataclasses.replace(settings, torch_threads=max(1, len(os.sched_getaffinity(0)) // computing))
    LOG.info("%s runs with %s", args["model_name"], settings)
    return settings


def forward_gate(args: Mapping[str, str], settings: ModelSettings) -> Callable[[], AbstractContextManager[Any]]:
    """What a model holds around each forward pass: a slot of the server's `ForwardGate` when it runs on
    CPU with limited forward slots, else nothing."""
    if settings.device != "cpu" or settings.forward_slots == 0:
        return contextlib.nullcontext
    return ForwardGate.for_repository(args["model_repository"], settings.forward_slots).hold


def max_batch_size(args: Mapping[str, str]) -> int:
    """The model config's `max_batch_size`: texts per request at most, and per batch the collector forms."""
    return int(json.loads(args["model_config"]).get("max_batch_size", 0)) or 64


class RequestView:
    """Decoded access to one Triton request: texts, parameters, requested outputs."""

    def __init__(self, pb: Any, request: Any, max_text_bytes: int) -> None:
        self.pb = pb
        self.request = request
        self.max_text_bytes = max_text_bytes

    def texts(self, name: str) -> list[str]:
        """The BYTES input `name` as strings: one per row, UTF-8, each within the size limit."""
        tensor = self.pb.get_input_tensor_by_name(self.request, name)
        if tensor is None:
            raise InvalidRequest(f"input {name!r} is missing")
        array = tensor.as_numpy()
        if array.ndim != 2 or (array.size and array.shape[1] != 1):
            raise InvalidRequest(f"input {name!r} must have shape [n, 1], got {list(array.shape)}")
        texts = []
        for row, value in enumerate(array.reshape(-1)):
            if isinstance(value, str):
                value = value.encode("utf-8")
            if not isinstance(value, bytes):
                raise InvalidRequest(f"{name}[{row}] is not a string")
            if len(value) > self.max_text_bytes:
                raise InvalidRequest(f"{name}[{row}] has {len(value)} bytes; the limit is {self.max_text_bytes}")
            try:
                texts.append(value.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise InvalidRequest(f"{name}[{row}] is not valid UTF-8 (byte {exc.start})") from None
        return texts

    def params(self) -> RequestParams:
        """The request's parameters."""
        return RequestParams(self.request.parameters())

    def requested_outputs(self, all_outputs: Sequence[str]) -> frozenset[str]:
        """The outputs the client asked for; all of them when it named none."""
        names = list(self.request.requested_output_names() or [])
        return frozenset(names) if names else frozenset(all_outputs)


class BatchExecutor(Generic[Job]):
    """Parse requests into jobs and build their responses: outputs, or errors that stay per request.

    A job that fails to parse gets an INVALID_ARG response; a failure while running gets an INTERNAL
    error with its first line only. Errors are counted in a Triton metric (error responses count as
    successes in Triton's own). The weight-holding models run their jobs through `serving.collector`;
    the rerank model, which calls the embed model over BLS, through `execute_async`.
    """

    def __init__(self, pb: Any, model_name: str, output_dtypes: dict[str, str], max_text_bytes: int) -> None:
        self.pb = pb
        self.model_name = model_name
        self.output_dtypes = output_dtypes
        self.max_text_bytes = max_text_bytes
        self._errors: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._error_family = None
        if hasattr(pb, "MetricFamily"):
            self._error_family = pb.MetricFamily(
                name="bge_m3_request_errors_total",
                description="Requests answered with an error by bge-m3-triton models, by kind",
                kind=pb.MetricFamily.COUNTER)

    async def execute_async(self, requests: Sequence[Any], parse: Callable[[RequestView], Job],
                            run: Callable[[list[Job]], Awaitable[list[Outputs | Exception]]]) -> list[Any]:
        """`async def execute` for models that call others through BLS; `run` reports per-job errors."""
        responses, jobs = self.parse_all(requests, parse)
        if jobs:
            try:
                outputs: list[Outputs | Exception] = list(await run([job for _, job in jobs]))
            except Exception as exc:  # one failure must still answer every request
                outputs = [exc] * len(jobs)
            self._fill(responses, jobs, outputs)
        return responses

    def parse_all(self, requests: Sequence[Any], parse: Callable[[RequestView], Job], check_cancelled: bool = True
                   ) -> tuple[list[Any], list[tuple[int, Job]]]:
        """Each request parsed into a job, or answered (INVALID_ARG, INTERNAL; CANCELLED when
        `check_cancelled`: a round trip to the Triton process per request, which a caller that checks
        again before computing can skip)."""
        responses: list[Any] = [None] * len(requests)
        jobs: list[tuple[int, Job]] = []
        for index, request in enumerate(requests):
            try:
                if check_cancelled and request.is_cancelled():
                    responses[index] = self.error("the request was cancelled", "CANCELLED")
                    continue
                jobs.append((index, parse(RequestView(self.pb, request, self.max_text_bytes))))
            except InvalidRequest as exc:
                responses[index] = self.error(str(exc), "INVALID_ARG")
            except Exception as exc:
                responses[index] = self.internal_error(exc)
        return responses, jobs

    def _fill(self, responses: list[Any], jobs: list[tuple[int, Job]], outputs: Sequence[Outputs | Exception]) -> None:
        for (index, _), result in zip(jobs, outputs):
            if isinstance(result, InvalidRequest):
                responses[index] = self.error(str(result), "INVALID_ARG")
            elif isinstance(result, Exception):
                responses[index] = self.internal_error(result)
            else:
                responses[index] = self.response(result)

    def response(self, outputs: Outputs) -> Any:
        """An InferenceResponse holding `outputs`, each cast to its contract dtype."""
        tensors = [self.pb.Tensor(name, np.ascontiguousarray(array, dtype=_NUMPY[self.output_dtypes[name]]))
                   for name, array in outputs.items()]
        return self.pb.InferenceResponse(output_tensors=tensors)

    def internal_error(self, exc: Exception) -> Any:
        """An INTERNAL error with the exception's type and first line: no traceback, no paths."""
        LOG.error("%s failed a request: %r", self.model_name, exc)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return self.error(f"inference failed: {type(exc).__name__}: {first_line}"[:500], "INTERNAL")

    def error(self, message: str, code: str) -> Any:
        """An error response with a Triton error code name (INVALID_ARG, INTERNAL, CANCELLED...)."""
        self._count(code)
        error_class = self.pb.TritonError
        return self.pb.InferenceResponse(error=error_class(message, getattr(error_class, code, error_class.INTERNAL)))

    def _count(self, code: str) -> None:
        if self._error_family is None:
            return
        with self._lock, METRIC_LOCK:  # the forward thread, the senders and `execute` all answer with errors
            if code not in self._errors:
                self._errors[code] = self._error_family.Metric(labels={"model": self.model_name,
                                                                        "code": code.lower()})
            self._errors[code].increment(1)


_NUMPY = {"FP32": np.float32, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}
