"""STATUS and GETPID on one long-lived reader thread, watched for deadlines.

The starter asks STATUS all through a job. Run like the mutating commands (a
pool worker, then a thread per call to keep the deadline), each costs about
four thread switches and a thread start, and the command loop waits for the
interpreter behind them: a STATUS sent right after another got its ``S``
~270 µs late. A read changes nothing, so it needs no thread of its own to be
given up on: the reader runs it directly, and a watchdog that wakes every
``tick`` answers a read that outlives its deadline. The reader stuck in that
call is left to finish on its own (it counts as a hung call, see
:mod:`vmgahp.vm.deadline`) and a new reader takes over the queue.

Reads run one at a time, in arrival order; each is answered exactly once by
whoever is first, the reader or the watchdog (the runtime's ``_finish``).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable

from vmgahp.vm import deadline


class Read:
    """One queued read: ``run()`` does and reports it; ``expire(why)`` reports
    its failure instead (a no-op if it was answered already)."""

    __slots__ = ("run", "expire", "deadline")

    def __init__(self, run: Callable[[], None], expire: Callable[[str], None], deadline_at: float) -> None:
        self.run = run
        self.expire = expire
        self.deadline = deadline_at


class _Reader:
    __slots__ = ("read", "abandoned")

    def __init__(self) -> None:
        self.read: Read | None = None  # the one it is running
        self.abandoned = False


class ReadLane:
    def __init__(self, tick: float, name: str = "vmgahp-reader") -> None:
        self.tick = tick
        self.name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Read | None] = queue.SimpleQueue()
        self._reader: _Reader | None = None  # the one that takes from the queue
        self._watchdog: threading.Thread | None = None
        self._closed = threading.Event()

    def submit(self, read: Read) -> None:
        with self._lock:
            if self._reader is None and not self._start_reader_locked():
                refused = True
            else:
                refused = False
                self._queue.put(read)
        if refused:
            read.expire(f"{deadline.MAX_HUNG_CALLS} earlier calls are still hung; not starting another")

    def close(self) -> None:
        """Stop the watchdog and the active reader; queued reads are dropped
        (the gahp is ending)."""
        self._closed.set()
        self._queue.put(None)  # the active reader ends

    # ------------------------------------------------------------ threads
    def _start_reader_locked(self) -> bool:
        if self._closed.is_set() or not deadline.may_leave_another():
            return False
        reader = _Reader()
        self._reader = reader
        threading.Thread(target=self._read, args=(reader,), name=self.name, daemon=True).start()
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name=f"{self.name}-watchdog", daemon=True)
            self._watchdog.start()
        return True

    def _read(self, reader: _Reader) -> None:
        while True:
            read = self._queue.get()
            if read is None:  # close()
                return
            if time.monotonic() >= read.deadline:
                read.expire("it waited its whole deadline behind a slow read (the hypervisor is slow or hung)")
                continue
            reader.read = read
            try:
                read.run()
            except BaseException:  # noqa: BLE001 - run() reports its own failures; the lane must go on
                pass
            with self._lock:
                reader.read = None
                if not reader.abandoned:
                    continue
                deadline.note_late_end()
                if self._reader is not None:
                    return  # its replacement reads on
                reader.abandoned = False  # no replacement was allowed: take the lane back
                self._reader = reader

    def _watch(self) -> None:
        while not self._closed.wait(self.tick):
            with self._lock:
                reader = self._reader
                late = reader.read if reader is not None else None
                if reader is None or late is None or time.monotonic() < late.deadline:
                    continue
                reader.abandoned = True
                deadline.note_abandoned()
                self._reader = None
            # Answered before a new reader can answer what queued behind it.
            late.expire(f"no answer within its deadline; the call is left running on {self.name}")
            with self._lock:
                if self._reader is not None:  # a submit started one meanwhile
                    continue
                orphans = [] if self._start_reader_locked() else self._drain_locked()
            for read in orphans:
                read.expire(f"{deadline.MAX_HUNG_CALLS} earlier calls are still hung; not starting another")

    def _drain_locked(self) -> list[Read]:
        """The queued reads, taken out when no reader may take them."""
        taken: list[Read] = []
        while True:
            try:
                read = self._queue.get_nowait()
            except queue.Empty:
                return taken
            if read is not None:
                taken.append(read)
