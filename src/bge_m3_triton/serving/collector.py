"""Continuous batching inside one model instance: `execute` queues, one forward thread drains.

Why: Triton's dynamic batcher fixes a batch when it hands it to an instance. With two instances behind
one forward gate (serving.forward_gate), the instance that waits for the gate holds whatever batch it
was handed, often one or two requests, while the requests that arrive meanwhile queue behind both; on
16 concurrent passages the batches formed ranged from 1 to 16. Here `execute` only parses and
tokenizes, queues the jobs and returns; the instance's forward thread takes the gate, then drains
every job queued by that moment (up to `max_texts` texts), so a batch is formed when the cores are
free, not before, and the next one gathers while this one computes. Each request is answered through
its own response sender (one final response, as a non-decoupled model must), errors stay per request,
and `execute` blocks while `max_pending_texts` texts wait (the models pass one batch's worth), so
overload backs up into Triton's queue and its queue policy (size limit, timeouts) still applies.
Because `execute` returns at once, Triton's dynamic batcher finds the instance free, and its lost
wake-up (a request idling 500 ms in Triton's queue: README, Latency) was not seen with one instance.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

from bge_m3_triton.core.settings import ModelSettings
from bge_m3_triton.serving.params import InvalidRequest
from bge_m3_triton.serving.triton_glue import BatchExecutor, Outputs, RequestView, forward_gate, max_batch_size

LOG = logging.getLogger(__name__)
Job = TypeVar("Job")
Prepared = TypeVar("Prepared")
Result = TypeVar("Result")
JobIn = TypeVar("JobIn", contravariant=True)


Loaded = TypeVar("Loaded")


def load_off_main_thread(load: Callable[[], Loaded]) -> Loaded:
    """`load()` run on a thread of its own that then exits, so the thread that calls `execute` never
    starts an OpenMP team. libgomp keeps one team per thread that starts parallel work; with a second
    team in the process its threads outnumber 2 cores, it throttles their spinning, and every parallel
    region of the forward thread pays a futex wake-up: a lone 16-token query took 1.3-1.6x the bare
    forward pass. A finished thread's team goes with it, so the forward thread's is the only one."""
    result: list[Loaded] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(load())
        except BaseException as exc:  # re-raised on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="bge-m3-load")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


class Stages(Protocol[JobIn, Prepared, Result]):
    """A model's work in steps: before, during and after the forward pass."""

    def parse(self, view: RequestView) -> Any: ...  # one request into a job; raises InvalidRequest
    def prepare(self, job: JobIn) -> Prepared: ...  # tokenize, check; raises InvalidRequest
    def forward(self, prepared: Sequence[Prepared]) -> Sequence[Result]: ...  # under the gate
    def pack(self, prepared: Prepared, result: Result) -> Outputs: ...
    def texts(self, prepared: Prepared) -> int: ...


@dataclasses.dataclass
class _Pending(Generic[Prepared]):
    request: Any
    sender: Any
    prepared: Prepared
    texts: int


class Collector(Generic[Job, Prepared, Result]):
    """`execute(requests)` for a model whose forward pass runs on its own thread; returns None."""

    def __init__(self, executor: BatchExecutor[Job], stages: Stages[Job, Prepared, Result],
                 hold: Callable[[], AbstractContextManager[Any]], max_texts: int, max_pending_texts: int) -> None:
        self.executor = executor
        self.stages = stages
        self.hold = hold
        self.max_texts = max(1, max_texts)
        self.max_pending_texts = max(self.max_texts, max_pending_texts)
        self._pending: list[_Pending[Prepared]] = []
        self._pending_texts = 0
        self._closing = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="bge-m3-forward", daemon=True)
        self._thread.start()

    @classmethod
    def for_model(cls, pb: Any, args: Mapping[str, str], settings: ModelSettings,
                  stages: Stages[Job, Prepared, Result],
                  output_dtypes: dict[str, str]) -> Collector[Job, Prepared, Result]:
        """What a weight-holding `model.py` runs: responses and errors from `BatchExecutor`, the server's
        forward gate, batches of up to the config's `max_batch_size` texts, and `execute` blocking while
        one such batch waits."""
        executor: BatchExecutor[Job] = BatchExecutor(pb, args["model_name"], output_dtypes, settings.max_text_bytes)
        batch = max_batch_size(args)
        return cls(executor, stages, forward_gate(args, settings), max_texts=batch, max_pending_texts=batch)

    def execute(self, requests: Sequence[Any]) -> None:
        """Answer malformed requests now; queue the others for the forward thread."""
        responses, jobs = self.executor.parse_all(requests, self.stages.parse)
        for request, response in zip(requests, responses):
            if response is not None:
                self._send(request.get_response_sender(), response)
        queued: list[_Pending[Prepared]] = []
        for index, job in jobs:
            sender = requests[index].get_response_sender()
            try:
                prepared = self.stages.prepare(job)
            except InvalidRequest as exc:
                self._send(sender, self.executor.error(str(exc), "INVALID_ARG"))
                continue
            except Exception as exc:
                self._send(sender, self.executor.internal_error(exc))
                continue
            queued.append(_Pending(requests[index], sender, prepared, self.stages.texts(prepared)))
        if not queued:
            return
        with self._changed:
            while self._pending and self._pending_texts >= self.max_pending_texts and not self._closing:
                self._changed.wait()
            if self._closing:  # the forward thread may be gone: answer rather than queue forever
                for item in queued:
                    self._send(item.sender, self.executor.error("the model is shutting down", "UNAVAILABLE"))
                return
            self._pending += queued
            self._pending_texts += sum(item.texts for item in queued)
            self._changed.notify_all()

    def close(self, timeout_s: float = 60.0) -> None:
        """Finish the queued work, then stop the forward thread."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closing:
                    self._changed.wait()
                if not self._pending:
                    return
            try:
                self._run_once()
            except BaseException as exc:  # the thread must outlive any failure; _run_once answers its batch
                LOG.error("the forward thread caught %r", exc)

    def _run_once(self) -> None:
        batch: list[_Pending[Prepared]] = []
        try:
            with self.hold():
                batch = self._take()
                live = []
                for item in batch:
                    if item.request.is_cancelled():
                        self._send(item.sender, self.executor.error("the request was cancelled", "CANCELLED"))
                    else:
                        live.append(item)
                results = self._forward_guarded(live)
        except BaseException as exc:
            for item in batch:
                self._send(item.sender, self.executor.internal_error(exc if isinstance(exc, Exception)
                                                                      else RuntimeError(repr(exc))))
            raise
        for item, result in zip(live, results):
            try:
                response = (self.executor.internal_error(result) if isinstance(result, Exception)
                            else self.executor.response(self.stages.pack(item.prepared, result)))
            except Exception as exc:
                response = self.executor.internal_error(exc)
            self._send(item.sender, response)

    def _take(self) -> list[_Pending[Prepared]]:
        """The queued jobs in arrival order, up to `max_texts` texts (always at least one job)."""
        with self._changed:
            taken, texts = 0, 0
            for item in self._pending:
                if taken and texts + item.texts > self.max_texts:
                    break
                taken += 1
                texts += item.texts
            batch, self._pending = self._pending[:taken], self._pending[taken:]
            self._pending_texts -= texts
            self._changed.notify_all()
            return batch

    def _forward_guarded(self, live: list[_Pending[Prepared]]) -> list[Result | Exception]:
        """The batch's results; if the batch fails together, each job alone, so only the culprit fails."""
        if not live:
            return []
        try:
            return list(self.stages.forward([item.prepared for item in live]))
        except Exception as exc:
            if len(live) == 1:
                return [exc]
            LOG.warning("a batch of %d requests failed (%s); retrying each alone", len(live), type(exc).__name__)
        results: list[Result | Exception] = []
        for item in live:
            try:
                results += self.stages.forward([item.prepared])
            except Exception as single:
                results.append(single)
        return results

    def _send(self, sender: Any, response: Any) -> None:
        try:
            sender.send(response, flags=self.executor.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as exc:  # the client may be gone; nothing else to tell
            LOG.warning("could not send a response: %r", exc)
