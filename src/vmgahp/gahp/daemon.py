"""The thin I/O shell around the session: stdin, stdout, signals, endings.

The main thread reads stdin and feeds lines to the (pure) session; worker
threads report finished requests. One lock serialises every call into the
session together with the stdout write it produces, so replies, ``R`` lines
and RESULTS blocks never interleave. Each reply is written with ``os.write``
straight to the file descriptor: nothing is buffered, nothing else ever goes
to stdout.

A RESULTS the session holds (nothing to report yet, requests in flight) is
answered when a result comes, when another line comes, or after
``hold_limit`` seconds - the runtime's call deadline, past which every
request has its result anyway; the limit only guards against a bug.

QUIT, EOF on stdin, a broken stdout and SIGTERM/SIGQUIT/SIGINT all destroy
every VM this gahp started and exit 0; only QUIT prints its ``S`` (after the
VMs are gone). A line whose handling raises is answered ``E`` and logged with
its traceback; nothing a peer sends ends the loop.
"""

from __future__ import annotations

import os
import selectors
import signal
import sys
import threading
import time
from typing import Callable, Protocol

from vmgahp import log
from vmgahp.protocol.session import Dispatch, GahpSession, Quit, Request, Send
from vmgahp.protocol.wire import LineFramer


class RequestRunner(Protocol):
    """What the command loop needs of the runtime: vm.runtime.Runtime, or
    the CLI's wrapper of it that binds the job id to the log."""

    def prepare_for_start(self) -> None: ...

    def submit(self, request: Request) -> None: ...

    def close(self) -> None: ...


READ_SIZE = 65536
SWITCH_INTERVAL = 0.0002  # seconds (sys.setswitchinterval)
_EXIT_SIGNALS = (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT)


class Daemon:
    def __init__(self, session: GahpSession, in_fd: int = 0, out_fd: int = 1, hold_limit: float = 300.0) -> None:
        self.session = session
        self.hold_limit = hold_limit
        self._held_since: float | None = None
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.runtime: RequestRunner | None = None
        self._lock = threading.RLock()
        self._framer = LineFramer()
        self._output_broken = False

    # ---------------------------------------------------------------- output
    def _write(self, text: str) -> None:
        if self._output_broken:
            return
        data = memoryview((text + "\n").encode("utf-8", "surrogateescape"))
        try:
            while data:
                written = os.write(self.out_fd, data)
                data = data[written:]
        except OSError:
            # The starter is gone; treat it like EOF on stdin.
            self._output_broken = True

    def write_banner(self, banner: str) -> None:
        self._write(banner)

    # --------------------------------------------------------------- results
    def report(self, request_id: int, ok: bool, text: str) -> None:
        """Called from worker threads when a request has finished."""
        with self._lock:
            for action in self.session.complete(request_id, ok, text):
                if isinstance(action, Send):
                    self._write(action.text)

    # ------------------------------------------------------------------ input
    def _handle_line(self, line: str | None) -> bool:
        """Process one line; False when the gahp must end (QUIT)."""
        dispatches: list[Request] = []
        quit_requested = False
        if line is None:
            log.get().warning("line_too_long", detail=f"a line over {self._framer.max_line} bytes was dropped")
        with self._lock:
            for action in self.session.receive_line(line):
                if isinstance(action, Send):
                    self._write(action.text)
                elif isinstance(action, Dispatch):
                    dispatches.append(action.request)
                elif isinstance(action, Quit):
                    quit_requested = True
        assert self.runtime is not None
        if self.session.holding:  # every line answers an older hold: this one is new
            self._held_since = time.monotonic()
        if self.session.receiving_ad:
            self.runtime.prepare_for_start()  # once: load what START needs now
        for request in dispatches:
            self.runtime.submit(request)
        if quit_requested:
            log.get().info("quit", detail="QUIT received; destroying VMs")
            self.runtime.close()
            with self._lock:
                self._write("S")
            return False
        return True

    def _guarded_line(self, line: str | None) -> bool:
        """``_handle_line``, but a line whose handling raises gets ``E`` (or,
        once dispatched, a failed result) and the loop goes on: no input may
        end the gahp while its VMs run."""
        try:
            return self._handle_line(line)
        except Exception:  # a bug: log it, answer, live on
            log.get().exception("line_failed", line=(line or "")[:200],
                                detail="handling this line raised; answered E")
            with self._lock:
                self._write("E")
            return True

    def serve(self) -> int:
        """Serve until QUIT, EOF or a termination signal; return the exit code.

        Whatever ends the loop - QUIT, EOF, a signal, stdout gone, or an
        exception nobody expected - every VM this gahp started is destroyed
        before ``serve`` returns or raises (the ``finally``)."""
        assert self.runtime is not None
        # A reply waits for the interpreter while a worker thread holds it, up
        # to the switch interval (5 ms by default): the command loop wants it
        # back within a fraction of a STATUS round trip. Workers mostly wait
        # in hypervisor calls, which release it anyway.
        sys.setswitchinterval(SWITCH_INTERVAL)
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        old_wakeup = signal.set_wakeup_fd(wake_write)
        for signum in _EXIT_SIGNALS:
            signal.signal(signum, _ignore)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # DaemonCore reconfig: nothing to re-read
        selector: selectors.BaseSelector | None = None
        try:
            selector = _selector_for(self.in_fd)
            selector.register(wake_read, selectors.EVENT_READ, "signal")
            return self._loop(selector, wake_read)
        finally:
            self.runtime.close()  # idempotent: QUIT may have closed it already
            signal.set_wakeup_fd(old_wakeup)
            if selector is not None:
                selector.close()
            os.close(wake_read)
            os.close(wake_write)

    def _hold_timeout(self) -> float | None:
        """Seconds until a held RESULTS must be answered; None if none is held."""
        with self._lock:
            if not self.session.holding:
                self._held_since = None
                return None
            assert self._held_since is not None
            left = self._held_since + self.hold_limit - time.monotonic()
            if left > 0:
                return left
            log.get().warning("results_hold_expired", seconds=self.hold_limit,
                              detail="a RESULTS waited its limit for a result; answered with none")
            for action in self.session.release():
                if isinstance(action, Send):
                    self._write(action.text)
            self._held_since = None
            return None

    def _loop(self, selector: selectors.BaseSelector, wake_read: int) -> int:
        while not self._output_broken:
            for key, _ in selector.select(self._hold_timeout()):
                if key.data == "signal":
                    signum = os.read(wake_read, 64)[:1]
                    log.get().info("signal", signum=signum[0] if signum else None, detail="exiting")
                    return 0
                try:
                    chunk = os.read(self.in_fd, READ_SIZE)
                except OSError as exc:
                    log.get().info("stdin_error", detail=f"reading stdin failed ({exc}); exiting")
                    return 0
                if not chunk:
                    log.get().info("eof", detail="Request buffer closed, exiting")
                    return 0
                for line in self._framer.feed(chunk):
                    if not self._guarded_line(line):
                        return 0
        log.get().info("stdout_closed", detail="the starter went away, exiting")
        return 0


def _selector_for(fd: int) -> selectors.BaseSelector:
    """A selector watching ``fd``: epoll refuses regular files and /dev/null
    (a hand-run gahp's stdin), select() takes any fd and finds it readable."""
    selector: selectors.BaseSelector = selectors.DefaultSelector()
    try:
        selector.register(fd, selectors.EVENT_READ, "stdin")
    except PermissionError:
        selector.close()
        selector = selectors.SelectSelector()
        selector.register(fd, selectors.EVENT_READ, "stdin")
    return selector


def _ignore(_signum: int, _frame: object) -> None:
    """The wakeup fd carries the signal to the main loop."""


def warm_up(*tasks: Callable[[], object]) -> None:
    """Run cheap-to-defer imports in the background after the banner."""

    def run() -> None:
        for task in tasks:
            try:
                task()
            except Exception:
                pass

    threading.Thread(target=run, name="vmgahp-warmup", daemon=True).start()
