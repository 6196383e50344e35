"""Batch execution for Python-backend models: every request gets its own response, errors stay per request.

`triton_python_backend_utils` exists only inside Triton's stub, so it is passed in (`pb`), which
also lets the unit tests use a stand-in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from bge_m3_client.contract import FORMATTED_OUTPUTS
from bge_m3_triton.serving.params import InvalidRequest, RequestParams

LOG = logging.getLogger(__name__)
# The Python backend's custom metrics are not safe to update from two threads of a stub at once: each
# update is a message to the Triton process, and concurrent ones crashed it (signal 11 in
# libtriton_python.so, Triton 2.51). Every metric update of this process holds this lock.
METRIC_LOCK = threading.Lock()
Job = TypeVar("Job")
Outputs = dict[str, np.ndarray]


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
        """An InferenceResponse holding `outputs`, each cast to its contract dtype (the dense and ColBERT
        vectors keep the dtype of the format the request asked for)."""
        tensors = [self.pb.Tensor(name, np.ascontiguousarray(
                       array, dtype=None if name in FORMATTED_OUTPUTS else _NUMPY[self.output_dtypes[name]]))
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
