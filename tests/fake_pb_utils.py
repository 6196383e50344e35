"""A stand-in for `triton_python_backend_utils`, enough to run our `model.py` files outside Triton."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

REPO = Path(__file__).resolve().parents[1]


class TritonError:
    INVALID_ARG, INTERNAL, CANCELLED, UNAVAILABLE = "INVALID_ARG", "INTERNAL", "CANCELLED", "UNAVAILABLE"

    def __init__(self, message: str, code: str = "INTERNAL") -> None:
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> str:
        return self._code


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None) -> None:
        self.output_tensors = {t.name(): t.as_numpy() for t in output_tensors or []}
        self._error = error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


class ResponseSender:
    """A request's response sender: a non-decoupled model sends exactly one final response."""

    def __init__(self) -> None:
        self.sent: list[InferenceResponse] = []
        self.done = threading.Event()

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        assert not self.done.is_set(), "a response was sent after the final one"
        assert flags == TRITONSERVER_RESPONSE_COMPLETE_FINAL and response is not None, "one final response"
        self.sent.append(response)
        self.done.set()


class Request:
    """A request as the backend hands it to `execute`."""

    def __init__(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any] | None = None,
                 outputs: list[str] | None = None, cancelled: bool = False, timeout_us: int = 0) -> None:
        self.inputs = inputs
        self._timeout_us = timeout_us
        self._parameters = json.dumps(parameters or {})
        self._outputs = outputs or []
        self._cancelled = cancelled
        self.sender = ResponseSender()

    def get_response_sender(self) -> ResponseSender:
        return self.sender

    def parameters(self) -> str:
        return self._parameters

    def requested_output_names(self) -> list[str]:
        return self._outputs

    def is_cancelled(self) -> bool:
        return self._cancelled

    def timeout(self) -> int:
        return self._timeout_us


def answers(model: Any, requests: list[Request], timeout_s: float = 120) -> list[InferenceResponse]:
    """`model.execute(requests)`'s responses in request order, whether it returns them or sends them
    through the requests' response senders (then waiting for each)."""
    returned = model.execute(requests)
    if returned is not None:
        assert not any(r.sender.sent for r in requests), "responses both returned and sent"
        return list(returned)
    for request in requests:
        assert request.sender.done.wait(timeout_s), "a request got no response"
    return [request.sender.sent[0] for request in requests]


def get_input_tensor_by_name(request: Request, name: str) -> Tensor | None:
    return Tensor(name, request.inputs[name]) if name in request.inputs else None


def texts(*values: str | bytes) -> np.ndarray:
    return np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=object).reshape(-1, 1)


def install() -> types.ModuleType:
    """Register this module as `triton_python_backend_utils`."""
    module = sys.modules[__name__]
    sys.modules["triton_python_backend_utils"] = module
    return module


def load_model_py(model: str) -> Any:
    """Import `model_repository/<model>/1/model.py` with the stand-in installed."""
    install()
    path = REPO / "model_repository" / model / "1" / "model.py"
    spec = importlib.util.spec_from_file_location(f"model_py_{model}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def triton_args(model: str, parameters: dict[str, str]) -> dict[str, str]:
    """The `args` Triton passes to `initialize`, with the shipped config's parameters overridden."""
    from bge_m3_triton.ops.render import load_config

    config = load_config(REPO / "model_repository" / model / "config.pbtxt")
    merged = {key: value.string_value for key, value in config.parameters.items()} | parameters
    return {"model_config": json.dumps({"max_batch_size": config.max_batch_size,
                                        "parameters": {k: {"string_value": v} for k, v in merged.items()}}),
            "model_name": model, "model_instance_kind": "CPU", "model_instance_device_id": "0",
            "model_repository": str(REPO / "model_repository" / model), "model_version": "1"}


class Metric:
    """One labelled series: a counter's or gauge's value, a histogram's observations."""

    def __init__(self, kind: str, buckets: list[float] | None) -> None:
        if (kind == MetricFamily.HISTOGRAM) != (buckets is not None):
            raise ValueError("a histogram, and only a histogram, takes buckets")
        self.kind, self.value, self.observed = kind, 0.0, []  # type: ignore[var-annotated]

    def increment(self, value: float) -> None:
        assert self.kind == MetricFamily.GAUGE or (self.kind == MetricFamily.COUNTER and value >= 0)
        self.value += value

    def set(self, value: float) -> None:
        assert self.kind == MetricFamily.GAUGE
        self.value = value

    def observe(self, value: float) -> None:
        assert self.kind == MetricFamily.HISTOGRAM
        self.observed.append(value)


class MetricFamily:
    """The backend's custom metrics: `registry[(name, model label)]` holds each series made."""

    COUNTER, GAUGE, HISTOGRAM = "COUNTER", "GAUGE", "HISTOGRAM"
    registry: ClassVar[dict[tuple[str, str], Metric]] = {}

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name, self.kind = name, kind

    def Metric(self, labels: dict[str, str], buckets: list[float] | None = None) -> Metric:  # noqa: N802
        metric = Metric(self.kind, buckets)
        MetricFamily.registry[(self.name, labels.get("model", ""))] = metric
        return metric
