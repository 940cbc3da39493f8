"""The trial logger's MLflow writes, in order, on one background thread, held through outages.

Tune calls its callbacks on the driver's one event loop: a callback that waits for MLflow stops
every trial from starting, reporting and checkpointing. So the callbacks only queue their writes
(create a run, log a batch, set tags, end a run) and this thread sends them one after another,
in the order they were queued. While MLflow is unreachable the write at the head of the queue is
retried, with backoff, and everything behind it waits its turn: nothing is dropped, nothing
overtakes, and training goes on. A write MLflow refuses (a bad request, not an outage) is dropped
with a warning, so one bad write cannot hold the rest back forever; an outage longer than
`give_up_after_s` drops the queue too, and says how many writes were lost.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from collections.abc import Callable

from mlflow.exceptions import MlflowException

GIVE_UP_AFTER_S = float(os.environ.get("RNNTUNE_TRACKING_OUTAGE_S", "3600"))
# Outage-type MLflow error codes; anything else is MLflow refusing the write itself.
_TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}


def disk_full(e: BaseException) -> bool:
    text = str(e)
    return "disk is full" in text or "No space left" in text


class WaitsForParked(Exception):
    """A write for a run whose creation is parked for a full disk: parked behind it, so it is
    replayed after the run exists (never dropped for want of a run id)."""


def parks(e: BaseException) -> bool:
    return disk_full(e) or isinstance(e, WaitsForParked)


def transient(e: BaseException) -> bool:
    """Whether a failed MLflow write is worth sending again: the server or the network is down
    or overloaded, or the embedded SQLite store is locked. A full disk is not: it does not heal
    by waiting, and the job should end with that cause rather than wait for it."""
    text = str(e)
    if disk_full(e):
        return False
    if isinstance(e, MlflowException):
        status = e.get_http_status_code()
        return e.error_code in _TRANSIENT_CODES and (status >= 500 or "API request to" in text)
    if type(e).__name__ == "OperationalError":  # sqlalchemy's, from the embedded store
        return "locked" in text
    return isinstance(e, OSError | ConnectionError | TimeoutError)


def _say(message: str) -> None:
    print(f"rnntune: {message}", file=sys.stderr, flush=True)


class OrderedWriter:
    """A FIFO of MLflow writes sent by one daemon thread; see the module docstring."""

    def __init__(self, what: str, give_up_after_s: float = GIVE_UP_AFTER_S) -> None:
        self.what = what  # named in the messages, e.g. the tracking URI
        self.give_up_after_s = give_up_after_s
        self.lost = 0  # writes dropped: refused by MLflow, or given up after a long outage
        self.errors: list[str] = []  # why, one line each (the first few)
        # writes the store refused for a full disk, in order: `replay` sends them again once
        # there is room (the embedded store's reserve released at the job's end)
        self.parked: list[Callable[[], None]] = []
        self._queue: collections.deque[Callable[[], None]] = collections.deque()
        self._busy = False
        self._closing = False
        self._running = True  # False once the thread has ended after a close (under _cv)
        self._cv = threading.Condition()
        self._thread = self._start()

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="rnntune-mlflow-writer", daemon=True)
        thread.start()
        return thread

    def submit(self, write: Callable[[], None]) -> None:
        with self._cv:
            self._queue.append(write)
            if not self._running:  # closed and ended: a write after the close is sent too
                self._running = True
                self._thread = self._start()
            self._cv.notify_all()

    def close(self) -> None:
        """Lets the thread end once every queued write is sent (or dropped); it does not wait
        for that. A process that runs jobs one after another keeps no idle thread per job."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()

    @property
    def queued(self) -> int:
        with self._cv:
            return len(self._queue) + self._busy

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued write is sent (or dropped); False if `timeout` ran out first.
        While MLflow is down this says every 30 s how many writes are waiting for it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        told = time.monotonic()
        with self._cv:
            while self._queue or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(min(left if left is not None else 1.0, 1.0))
                if time.monotonic() - told >= 30:
                    told = time.monotonic()
                    n = len(self._queue) + self._busy
                    _say(f"waiting for MLflow at {self.what}: {n} writes not yet delivered")
        return True

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    if self._closing:
                        self._running = False
                        return
                    self._cv.wait()
                write = self._queue[0]
                self._busy = True
            try:
                self._send(write)
            finally:
                with self._cv:
                    self._queue.popleft()
                    self._busy = False
                    self._cv.notify_all()

    def _send(self, write: Callable[[], None]) -> None:
        down_since, delay = None, 0.5
        while True:
            try:
                write()
            except Exception as e:  # noqa: BLE001 - classified below; never kills the thread
                if disk_full(e) and not self.parked:
                    _say(f"MLflow's store is out of disk space; writes kept for the job's end: {e}")
                if parks(e):
                    self.parked.append(write)
                    return
                if not transient(e):
                    self._drop(f"MLflow refused a write: {type(e).__name__}: {e}"[:500])
                    return
                now = time.monotonic()
                if down_since is None:
                    down_since = now
                    _say(
                        f"MLflow at {self.what} unreachable ({type(e).__name__}); "
                        f"{self.queued} writes held and retried, training goes on"
                    )
                if now - down_since >= self.give_up_after_s:
                    self._give_up(now - down_since, e)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if down_since is not None:
                _say(f"MLflow back after {time.monotonic() - down_since:.0f} s; held writes follow")
            return

    def replay(self) -> int:
        """The writes parked for a full disk, queued again in their order; how many. A write
        that fails again for the disk is dropped and counted this time."""
        parked, self.parked = self.parked, []
        for write in parked:
            self.submit(_LastTry(write, self))
        return len(parked)

    def _drop(self, why: str) -> None:
        self.lost += 1
        if len(self.errors) < 5:
            self.errors.append(why)
        _say(why)

    def _give_up(self, down_s: float, e: Exception) -> None:
        """Ends an outage longer than the budget: the head write and all queued behind it."""
        with self._cv:
            behind = len(self._queue) - 1  # the head is popped by _run
            for _ in range(behind):
                self._queue.pop()
        self.lost += behind
        self._drop(
            f"MLflow at {self.what} unreachable for {down_s:.0f} s; "
            f"{behind + 1} tracking writes dropped ({type(e).__name__})"
        )


class _LastTry:
    """A parked write sent once more: a full disk now drops it, and counts it lost."""

    def __init__(self, write: Callable[[], None], writer: OrderedWriter) -> None:
        self.write, self.writer = write, writer

    def __call__(self) -> None:
        try:
            self.write()
        except Exception as e:
            if not parks(e):
                raise
            self.writer._drop(f"MLflow's store is still full: {type(e).__name__}: {e}"[:500])
