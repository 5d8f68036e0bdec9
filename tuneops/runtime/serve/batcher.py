"""Bounded admission and the worker thread that drives the `Engine`.

Requests are admitted up to `max_concurrent_requests` (queued + generating; above it: 429, like TGI's
`--max-concurrent-requests`). The worker loop alternates: admit whatever is queued into the running batch
(up to `max_batch_size`, one batched prefill), then one decode step for the whole batch. So concurrent
requests share forward passes without waiting for each other to finish (continuous batching)."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from . import errors
from .engine import Engine, ErrorEvent, Sequence

log = logging.getLogger("tuneops.serve")


class Batcher:
    def __init__(self, engine: Engine, *, max_concurrent_requests: int = 128, metrics: Any = None) -> None:
        self.engine = engine
        self.max_concurrent_requests = max_concurrent_requests
        self.metrics = metrics
        self._queue: collections.deque[Sequence] = collections.deque()
        self._admitted = 0
        self._lock = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tuneops-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def admitted(self) -> int:
        return self._admitted

    @property
    def queue_size(self) -> int:
        return len(self._queue)

    def submit(self, seq: Sequence) -> None:
        """Queue `seq` or raise 429 (overloaded) / 503 (shutting down). Pair every success with `done(seq)`."""
        with self._lock:
            if self._stopping:
                raise errors.not_ready("server is shutting down")
            if self._admitted >= self.max_concurrent_requests:
                raise errors.overloaded()
            self._admitted += 1
            self._queue.append(seq)
            self._lock.notify()
        self._report_sizes()

    def done(self, seq: Sequence) -> None:
        """The request has left (finished, failed, timed out or the client went away)."""
        seq.cancelled.set()
        with self._lock:
            self._admitted -= 1
            self._lock.notify_all()

    def stop(self, drain_timeout: float = 30.0) -> bool:
        """Refuse new work, let admitted requests finish (up to `drain_timeout`), then stop the worker.
        Returns True if everything drained in time."""
        deadline = time.monotonic() + drain_timeout
        with self._lock:
            self._stopping = True
            while self._admitted > 0 and time.monotonic() < deadline:
                self._lock.wait(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
            drained = self._admitted == 0
            self._lock.notify_all()
        self._thread.join(timeout=5)
        return drained

    # ---- worker thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self.engine.running:
                    if self._stopping and self._admitted == 0:
                        return
                    self._lock.wait(timeout=0.5)
                    if self._stopping and not self._queue and not self.engine.running:
                        # admitted but unqueued requests cannot exist: queue empty + idle means drained
                        return
                take = min(len(self._queue), self.engine.free_slots())
                batch = [self._queue.popleft() for _ in range(take)]
            try:
                if batch:
                    if self.metrics:
                        now = time.monotonic()
                        for seq in batch:
                            self.metrics.observe_queue_wait(now - seq.enqueued_at)
                    self.engine.add(batch)
                self.engine.step()
            except Exception as exc:  # a failed forward pass fails its batch, not the server
                log.exception("generation failed")
                self._fail_running(batch, exc)
            self._report_sizes()

    def _fail_running(self, batch: list[Sequence], exc: Exception) -> None:
        failed = {id(s): s for s in [*self.engine.running, *batch]}
        for seq in failed.values():
            if not seq.finished:
                seq.finished = True
                seq.emit(ErrorEvent(errors.generation(f"{type(exc).__name__}: {exc}")))
        self.engine.running = []
        self.engine._cache = None

    def _report_sizes(self) -> None:
        if self.metrics:
            self.metrics.set_sizes(queue=len(self._queue), batch=len(self.engine.running))
