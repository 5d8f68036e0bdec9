"""A small work queue in the client-go style: keys, not events; one worker per key at a time; delayed requeues.

Child events (Job, Pod, ConfigMap, Deployment, ModelVersion) only say "look at parent X again"; bursts for the
same parent collapse into one reconcile. Lost on restart by design: at start-up kopf's resume handlers
reconcile every object again, so nothing depends on this queue surviving.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Hashable

log = logging.getLogger("tuneops.operator.queue")


class WorkQueue:
    def __init__(self, handler: Callable[[Hashable], float | None], workers: int = 4, name: str = "reconcile",
                 error_backoff: tuple[float, float] = (1.0, 60.0)):
        """`handler(key)` returns seconds until the key should be looked at again, or None."""
        self._handler = handler
        self._cond = threading.Condition()
        self._ready: list[Hashable] = []  # FIFO of keys to process now
        self._queued: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._dirty: set[Hashable] = set()  # added again while being processed
        self._delayed: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}  # earliest pending delayed time per key
        self._seq = 0
        self._failures: dict[Hashable, int] = {}
        self._backoff = error_backoff
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        self._timer = threading.Thread(target=self._tick, name=f"{name}-timer", daemon=True)

    def start(self) -> "WorkQueue":
        for t in [*self._threads, self._timer]:
            t.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        with self._cond:
            if delay > 0:
                due = time.monotonic() + delay
                if self._due.get(key, float("inf")) <= due:
                    return  # already coming back no later than that
                self._due[key] = due
                self._seq += 1
                heapq.heappush(self._delayed, (due, self._seq, key))
            elif key in self._processing:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)
            self._cond.notify_all()

    def depth(self) -> int:
        with self._cond:
            return len(self._ready) + len(self._delayed)

    def _tick(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                due = []
                while self._delayed and self._delayed[0][0] <= now:
                    at, _, key = heapq.heappop(self._delayed)
                    if self._due.get(key) == at:
                        del self._due[key]
                        due.append(key)
                wait = (self._delayed[0][0] - now) if self._delayed else 1.0
            for key in due:
                self.add(key)
            with self._cond:
                if not self._stopped:
                    self._cond.wait(timeout=min(max(wait, 0.01), 1.0))

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                key = self._ready.pop(0)
                self._queued.discard(key)
                self._processing.add(key)
            again: float | None = None
            try:
                again = self._handler(key)
                self._failures.pop(key, None)
            except Exception:  # noqa: BLE001 - a failed reconcile is retried with backoff, never lost
                n = self._failures[key] = self._failures.get(key, 0) + 1
                again = min(self._backoff[0] * 2 ** (n - 1), self._backoff[1])
                log.exception("reconcile of %s failed (attempt %d); retrying in %.0fs", key, n, again)
            with self._cond:
                self._processing.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self._queued.add(key)
                    self._ready.append(key)
                    self._cond.notify_all()
            if again is not None:
                self.add(key, delay=again)
