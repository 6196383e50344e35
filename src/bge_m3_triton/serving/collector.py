"""Continuous batching inside one model instance: `execute` queues, one forward thread drains.

The weight-holding models have no `dynamic_batching` block: Triton hands every request straight to the
instance, `execute` parses and tokenizes it, queues it here and returns, and the instance's forward
thread takes the forward gate (serving.forward_gate), then every job queued by that moment (up to
`max_texts` texts). A batch forms when the cores are free, not before, and the next one gathers
while this one computes. Each request is answered through its own response sender (one final
response, as a non-decoupled model must); errors stay per request.

Why not Triton's dynamic batcher: it fixes a batch when it hands it to an instance, and with one
instance it loses wake-ups. A request enqueued while the instance is still returning from `execute`
finds no free slot, so `Enqueue` does not wake the batcher, which sleeps until the next request
arrives or 500 ms pass (`dynamic_batch_scheduler.cc`, Triton 2.51). With queries at concurrency 8
that left one client in six out of the next batch, so it waited two forward passes.

So the queue and its policy live here:
- The queue delay adapts. Once the cores are free, the forward thread waits at most `delay_s` for as
  many requests as were in the model while its previous batch ran (that batch's, whose clients may
  send again, and those queued meanwhile). A request that finds the model idle goes at once.
- Requests beyond `max_queue_size` queued are refused at once (UNAVAILABLE, as Triton's batcher does).
- A request that waited longer than its timeout (its own, or `queue_timeout_s`) is refused when the
  forward thread reaches it, rather than computed for a client that has given up.

Triton unloads a model only once every request it handed over has its response, so draining is the
collector's: on the launcher's drain notice (serving.drain) it stops taking requests, lets the forward
thread work through what is queued for at most the drain window (`drain_seconds`), then answers
whatever is left, queued or in the running batch, with UNAVAILABLE and stops the forward pass at its
next sub-batch. The launcher gives Triton an exit timeout past that window (docs/reliability.md), so
the server exits 0.

It also exports what Triton cannot see (docs/deploy.md, autoscaling): requests in the model (a gauge),
and each request's time queued and time in the model (histograms), by model.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

from bge_m3_triton.core.batching import Interrupted
from bge_m3_triton.core.settings import ModelSettings
from bge_m3_triton.serving.drain import NoticeWatcher, repository_of
from bge_m3_triton.serving.instance import forward_gate, max_batch_size
from bge_m3_triton.serving.params import InvalidRequest
from bge_m3_triton.serving.triton_glue import METRIC_LOCK, BatchExecutor, Outputs, RequestView

LOG = logging.getLogger(__name__)
SEND_THREADS = 4
ABANDON_JOIN_S = 10.0  # after the drain window, how long close() waits for the forward pass to stop
Job = TypeVar("Job")
Prepared = TypeVar("Prepared")
Result = TypeVar("Result")
JobIn = TypeVar("JobIn", contravariant=True)


class Stages(Protocol[JobIn, Prepared, Result]):
    """A model's work in steps: before, during and after the forward pass."""

    def parse(self, view: RequestView) -> Any: ...  # one request into a job; raises InvalidRequest
    def prepare(self, job: JobIn) -> Prepared: ...  # tokenize, check; raises InvalidRequest
    def forward(self, prepared: Sequence[Prepared]) -> Sequence[Result]: ...  # under the gate
    def pack(self, prepared: Prepared, result: Result) -> Outputs: ...
    def texts(self, prepared: Prepared) -> int: ...
    def interrupt(self) -> None: ...  # from another thread: the running forward pass raises `Interrupted` soon


@dataclasses.dataclass
class _Pending(Generic[Prepared]):
    request: Any
    sender: Any
    prepared: Prepared
    texts: int
    arrived: float  # time.monotonic() when queued
    deadline: float  # time.monotonic() after which it is refused unanswered; inf: none
    answered: bool = False  # set once, under the collector's answer lock: one response per request


class Collector(Generic[Job, Prepared, Result]):
    """`execute(requests)` for a model whose forward pass runs on its own thread; returns None."""

    def __init__(self, executor: BatchExecutor[Job], stages: Stages[Job, Prepared, Result],
                 hold: Callable[[], AbstractContextManager[Any]], max_texts: int, delay_s: float = 0.0,
                 max_queue_size: int = 0, queue_timeout_s: float = 0.0, drain_s: float = 30.0) -> None:
        self.executor = executor
        self.stages = stages
        self.hold = hold
        self.max_texts = max(1, max_texts)
        self.delay_s = max(0.0, delay_s)
        self.max_queue_size = max(0, max_queue_size)  # 0: no limit
        self.queue_timeout_s = max(0.0, queue_timeout_s)  # 0: no limit
        self.drain_s = max(0.0, drain_s)
        self._pending: list[_Pending[Prepared]] = []
        self._running: list[_Pending[Prepared]] = []  # the batch the forward thread holds
        self._answer_lock = threading.Lock()
        self._closing = False
        self.watcher: NoticeWatcher | None = None  # the drain notice's, when served (`for_model`)
        self._expected = 1  # requests in the model while the previous batch ran
        self._last_end = -float("inf")  # time.monotonic() when the previous batch was answered
        self._metrics = _ForwardMetrics(executor.pb, executor.model_name)
        # A batch's responses go out in parallel: a send mostly waits on the IPC round trip to Triton
        # (about 80% of the answering time), and those waits overlap.
        self._senders = concurrent.futures.ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="bge-m3-send")
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="bge-m3-forward", daemon=True)
        self._thread.start()

    @classmethod
    def for_model(cls, pb: Any, args: Mapping[str, str], settings: ModelSettings,
                  stages: Stages[Job, Prepared, Result],
                  output_dtypes: dict[str, str]) -> Collector[Job, Prepared, Result]:
        """What a weight-holding `model.py` runs: responses and errors from `BatchExecutor`, the server's
        forward gate, batches of up to the config's `max_batch_size` texts, and the queue settings
        (`queue_delay_us`, `max_queue_size`, `queue_timeout_us`)."""
        executor: BatchExecutor[Job] = BatchExecutor(pb, args["model_name"], output_dtypes, settings.max_text_bytes)
        collector = cls(executor, stages, forward_gate(args, settings), max_texts=max_batch_size(args),
                        delay_s=settings.queue_delay_us / 1e6, max_queue_size=settings.max_queue_size,
                        queue_timeout_s=settings.queue_timeout_us / 1e6, drain_s=settings.drain_seconds)
        collector.watcher = NoticeWatcher(repository_of(args["model_repository"]), collector.drain)
        return collector

    def execute(self, requests: Sequence[Any]) -> None:
        """Answer malformed requests now; queue the others for the forward thread."""
        # Cancellation is asked once, by the forward thread just before the forward pass.
        responses, jobs = self.executor.parse_all(requests, self.stages.parse, check_cancelled=False)
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
            now = time.monotonic()
            queued.append(_Pending(requests[index], sender, prepared, self.stages.texts(prepared), now,
                                   now + self._timeout_s(requests[index])))
        refused: list[tuple[_Pending[Prepared], str]] = []
        self._metrics.in_model(len(queued))  # before they can leave: the gauge never reads below 0
        with self._changed:
            for item in queued:
                if self._closing:  # the forward thread may be gone: answer rather than queue forever
                    refused.append((item, "the model is shutting down"))
                elif self.max_queue_size and len(self._pending) >= self.max_queue_size:
                    refused.append((item, "Exceeds maximum queue size"))
                else:
                    self._pending.append(item)
            self._changed.notify_all()
        self._metrics.in_model(-len(refused))
        for item, message in refused:
            self._answer(item, self.executor.error(message, "UNAVAILABLE"))

    def _timeout_s(self, request: Any) -> float:
        """How long a request may wait: its own timeout when its client set one, else the model's."""
        own = getattr(request, "timeout", lambda: 0)()
        seconds = own / 1e6 if own else self.queue_timeout_s
        return seconds if seconds > 0 else float("inf")

    def drain(self, since_signal_s: float = 0.0) -> None:
        """The server is shutting down (the signal came `since_signal_s` ago): `close` within what is left
        of the drain window."""
        LOG.info("shutting down: draining for at most %.1f s", max(0.0, self.drain_s - since_signal_s))
        self.close(max(0.0, self.drain_s - since_signal_s))

    def close(self, drain_s: float | None = None) -> None:
        """Stop taking requests and finish the queued work within `drain_s` (default: the model's drain
        window); then answer what is left, queued or computing, UNAVAILABLE, and stop the forward pass at its
        next sub-batch. Every request is answered when this returns."""
        window = self.drain_s if drain_s is None else max(0.0, drain_s)
        if self.watcher is not None:
            self.watcher.stop()
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join(window)
        if self._thread.is_alive():
            self._abandon()
            self._thread.join(ABANDON_JOIN_S)  # the forward pass stops between sub-batches
            if self._thread.is_alive():
                LOG.warning("the forward thread is still in a sub-batch %.0f s after the drain window; "
                            "every request is answered, the process exits without it", ABANDON_JOIN_S)
        self._senders.shutdown(wait=True)

    def _abandon(self) -> None:
        """Answer every request still queued or in the running batch UNAVAILABLE (a client may retry it on
        another instance), and ask the forward pass to stop."""
        with self._changed:
            left = self._pending + self._running
            self._metrics.in_model(-len(self._pending))  # the running batch's leave when its thread is done
            self._pending = []
            self._changed.notify_all()
        LOG.warning("drain window of %g s over: %d request(s) answered UNAVAILABLE unfinished", self.drain_s,
                    len(left))
        self.stages.interrupt()
        for item in left:
            self._answer(item, self._shutting_down())

    def _shutting_down(self) -> Any:
        return self.executor.error(f"the server is shutting down and this request did not finish within its "
                                   f"drain window ({self.drain_s:g} s): retry it", "UNAVAILABLE")

    def _loop(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closing:
                    self._changed.wait()
                if not self._pending:
                    return
                self._wait_for_company()
            try:
                self._run_once()
            except BaseException as exc:  # the thread must outlive any failure; _run_once answers its batch
                LOG.error("the forward thread caught %r", exc)

    def _wait_for_company(self) -> None:
        """With the lock held and a job queued: wait at most `delay_s` from when the model came free (or
        from the first job's arrival, if later) for as many requests as were in the model while the
        previous batch ran. A job that arrives more than `delay_s` after the previous batch was answered
        found the model idle and goes at once."""
        first = self._pending[0].arrived
        if self.delay_s <= 0 or first - self._last_end > self.delay_s:
            return
        deadline = max(first, self._last_end) + self.delay_s
        while (not self._closing and len(self._pending) < self._expected
               and sum(item.texts for item in self._pending) < self.max_texts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._changed.wait(remaining)

    def _run_once(self) -> None:
        batch: list[_Pending[Prepared]] = []
        live: list[_Pending[Prepared]] = []
        taken = 0
        try:
            with self.hold():
                batch, expired = self._take()
                taken = len(batch) + len(expired)
                live = batch  # the unanswered: cancelled ones leave it as they are answered
                for item in expired:
                    self._answer(item, self.executor.error("Request timeout expired", "UNAVAILABLE"))
                cancelled = [item.request.is_cancelled() for item in batch]
                live = [item for item, gone in zip(batch, cancelled) if not gone]
                for item, gone in zip(batch, cancelled):
                    if gone:
                        self._answer(item, self.executor.error("the request was cancelled", "CANCELLED"))
                started = time.monotonic()
                self._metrics.queued(started - item.arrived for item in live)
                results = self._forward_guarded(live)
                computed = time.monotonic()
        except Interrupted:  # the drain window is over: `_abandon` has answered the batch
            self._finished(batch, time.monotonic(), taken)
            for item in live:
                self._answer(item, self._shutting_down())
            return
        except BaseException as exc:  # answer what is unanswered, then let it out
            self._finished(batch, time.monotonic(), taken)
            for item in live:
                self._answer(item, self.executor.internal_error(exc if isinstance(exc, Exception)
                                                                 else RuntimeError(repr(exc))))
            raise
        sends = []
        for item, result in zip(live, results):
            try:
                response = (self.executor.internal_error(result) if isinstance(result, Exception)
                            else self.executor.response(self.stages.pack(item.prepared, result)))
            except Exception as exc:
                response = self.executor.internal_error(exc)
            if len(live) == 1:  # a lone response goes from this thread: no hop to a sender thread
                self._answer(item, response)
            else:
                sends.append(self._senders.submit(self._answer, item, response))
        concurrent.futures.wait(sends)  # the batch counts as answered when every response is out
        answered = time.monotonic()
        self._metrics.count(len(live), sum(item.texts for item in live), computed - started, answered - computed)
        self._metrics.served(answered - item.arrived for item in live)
        self._finished(batch, computed, taken)  # last: the gauge reads 0 only once the counters are whole

    def _finished(self, batch: list[_Pending[Prepared]], computed: float, taken: int) -> None:
        """Remember for `_wait_for_company` when the batch was answered and how many requests were in the
        model meanwhile: the batch's, whose clients may send again, and those that queued before its
        forward pass ended (later ones may be the batch's own clients, answered first, come back)."""
        with self._changed:
            during = sum(1 for item in self._pending if item.arrived < computed)
            self._expected = max(1, len(batch) + during)
            self._last_end = time.monotonic()
            self._running = []
        self._metrics.in_model(-taken)  # the batch's requests, and the expired ones taken with it, have left

    def _take(self) -> tuple[list[_Pending[Prepared]], list[_Pending[Prepared]]]:
        """The queued jobs in arrival order, up to `max_texts` texts (always at least one job, unless
        all have expired), and the jobs whose deadline passed while they waited."""
        with self._changed:
            now = time.monotonic()
            expired = [item for item in self._pending if item.deadline < now]
            if expired:
                self._pending = [item for item in self._pending if item.deadline >= now]
            taken, texts = 0, 0
            for item in self._pending:
                if taken and texts + item.texts > self.max_texts:
                    break
                taken += 1
                texts += item.texts
            batch, self._pending = self._pending[:taken], self._pending[taken:]
            self._running = batch
            return batch, expired

    def _forward_guarded(self, live: list[_Pending[Prepared]]) -> list[Result | Exception]:
        """The batch's results; if the batch fails together, each job alone, so only the culprit fails."""
        if not live:
            return []
        try:
            return list(self.stages.forward([item.prepared for item in live]))
        except Interrupted:
            raise  # shutting down: the requests are answered already
        except Exception as exc:
            if len(live) == 1:
                return [exc]
            LOG.warning("a batch of %d requests failed (%s); retrying each alone", len(live), type(exc).__name__)
        results: list[Result | Exception] = []
        for item in live:
            try:
                results += self.stages.forward([item.prepared])
            except Interrupted:
                raise
            except Exception as single:
                results.append(single)
        return results

    def _answer(self, item: _Pending[Prepared], response: Any) -> None:
        """Send a queued request's one response, unless it has had it (the drain may answer a request the
        forward thread is computing, and the thread's answer then goes nowhere)."""
        with self._answer_lock:
            if item.answered:
                return
            item.answered = True
        self._send(item.sender, response)

    def _send(self, sender: Any, response: Any) -> None:
        try:
            sender.send(response, flags=self.executor.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as exc:  # the client may be gone; nothing else to tell
            LOG.warning("could not send a response: %r", exc)


# Seconds: from a lone query's milliseconds on a GPU to a long batch queued behind others on a CPU.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _ForwardMetrics:
    """What the collector knows and Triton cannot see, by model (Triton's own queue and request times end
    when `execute` returns, milliseconds after a request arrives, however long it then waits here):

    - counters of the forward passes, the requests and texts they carried, and the seconds spent in them
      and in answering their requests (Triton's own execution count only counts `execute` calls);
    - `bge_m3_requests_in_model`: requests queued or computing now (a gauge);
    - `bge_m3_queue_seconds`: each request's time from arrival to the start of its forward pass;
    - `bge_m3_request_seconds`: each request's time from arrival to its response (histograms).
    """

    _COUNTERS = (("bge_m3_forward_passes_total", "Forward passes"),
                 ("bge_m3_forward_requests_total", "Requests answered by forward passes"),
                 ("bge_m3_forward_texts_total", "Texts encoded by forward passes"),
                 ("bge_m3_forward_seconds_total", "Seconds spent in forward passes"),
                 ("bge_m3_answer_seconds_total", "Seconds spent packing and sending the responses of forward passes"))

    def __init__(self, pb: Any, model_name: str) -> None:
        self._families: list[Any] = []  # kept alive: a Metric must not outlive its MetricFamily
        self._counters: list[Any] = []
        self._gauge: Any = None
        self._queue: Any = None
        self._total: Any = None
        if not hasattr(pb, "MetricFamily"):
            return
        labels = {"model": model_name}
        for name, what in self._COUNTERS:
            self._counters.append(self._family(pb, name, f"{what} of bge-m3-triton models", "COUNTER").Metric(
                labels=labels))
        self._gauge = self._family(pb, "bge_m3_requests_in_model", "Requests queued or computing in bge-m3-triton "
                                   "models now (Triton's own metrics do not see this queue)", "GAUGE").Metric(
            labels=labels)
        histogram = getattr(pb.MetricFamily, "HISTOGRAM", None)
        if histogram is None:  # Python backends before 24.08 have no histograms
            return
        self._queue = self._family(pb, "bge_m3_queue_seconds", "Seconds a request waited in a bge-m3-triton "
                                   "model before its forward pass", "HISTOGRAM").Metric(
            labels=labels, buckets=list(LATENCY_BUCKETS))
        self._total = self._family(pb, "bge_m3_request_seconds", "Seconds from a request's arrival in a "
                                   "bge-m3-triton model to its response", "HISTOGRAM").Metric(
            labels=labels, buckets=list(LATENCY_BUCKETS))

    def _family(self, pb: Any, name: str, description: str, kind: str) -> Any:
        family = pb.MetricFamily(name=name, description=description, kind=getattr(pb.MetricFamily, kind))
        self._families.append(family)
        return family

    def count(self, requests: int, texts: int, forward_s: float, answer_s: float) -> None:
        if requests and self._counters:
            with METRIC_LOCK:
                for counter, value in zip(self._counters, (1, requests, texts, forward_s, answer_s)):
                    counter.increment(value)

    def in_model(self, change: int) -> None:
        """Requests came in (`change` > 0) or left. By increments, not `set`: the instances of a model share
        one series, and each adds its own."""
        if self._gauge is not None and change:
            with METRIC_LOCK:
                self._gauge.increment(change)

    def queued(self, seconds: Iterable[float]) -> None:
        self._observe(self._queue, seconds)

    def served(self, seconds: Iterable[float]) -> None:
        self._observe(self._total, seconds)

    @staticmethod
    def _observe(histogram: Any, seconds: Iterable[float]) -> None:
        if histogram is not None:
            with METRIC_LOCK:
                for value in seconds:
                    histogram.observe(value)
