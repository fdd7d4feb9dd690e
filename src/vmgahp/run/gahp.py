"""One ``vmgahp -f -M 3`` process, driven through :mod:`vmgahp.protocol.client`.

This is only the I/O shell: the process, its pipes, one ``select`` loop over
the gahp's stdout and a signal wake-up pipe (so Ctrl-C is seen at once but
never splits a command from its reply), and the timeouts. Framing, replies,
request ids and results are the protocol client's.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TextIO

from vmgahp.protocol import client as protocol
from vmgahp.protocol.client import (
    NEED_DATA,
    Banner,
    Closed,
    GahpClient,
    Notification,
    ProtocolError,
    Reply,
    Result,
    Results,
    Unexpected,
)

BANNER_TIMEOUT = 90.0  # the gahp checks its configuration and the hypervisor first (up to 30 s)
REPLY_TIMEOUT = 60.0  # an immediate S/E reply; the real starter would wait forever
BLOCKING_POLL = 2.0  # a blocking request polls RESULTS this often (vm_gahp_server.cpp)
QUIT_TIMEOUT = 60.0  # QUIT destroys the VMs first (bounded by the gahp)
EXIT_TIMEOUT = 30.0
KILL_MODE_TIMEOUT = 90.0
# What the gahp can say while it runs; EOF never reaches the client (GahpDied).
Line = Banner | Notification | Reply | Results | Unexpected


class GahpFailure(Exception):
    """The gahp died, hung, or broke the protocol."""


class GahpDied(GahpFailure):
    pass


class HardStop(Exception):
    """A second interrupt: stop everything now."""


class Interrupts:
    """SIGINT and SIGTERM, counted; a pipe wakes the select loop when one arrives."""

    def __init__(self) -> None:
        self.count = 0
        self.signal_name = ""
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
            fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        self._saved: dict[int, Callable[..., object] | int | None] = {}  # what signal.signal returned
        self._saved_fd: int | None = None

    @property
    def fd(self) -> int:
        return self._read

    def install(self) -> None:
        try:
            self._saved_fd = signal.set_wakeup_fd(self._write)
        except ValueError:  # not the main thread: signals cannot reach us anyway
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._saved[signum] = signal.signal(signum, self._handler)

    def _handler(self, signum: int, _frame: object) -> None:
        self.count += 1
        self.signal_name = signal.Signals(signum).name

    def drain(self) -> None:
        try:
            while os.read(self._read, 512):
                pass
        except BlockingIOError:
            pass

    def restore(self) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        if self._saved_fd is not None:
            signal.set_wakeup_fd(self._saved_fd)
        self._saved.clear()
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass


class Gahp:
    """One ``vmgahp -f -M 3`` process and the starter's side of its pipes."""

    hard_level = 2  # interrupts that abort even a pending request

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        stderr_path: Path,
        interrupts: Interrupts,
        trace: TextIO | None = None,
    ) -> None:
        self.interrupts = interrupts
        self.trace = trace
        try:
            with open(stderr_path, "wb") as stderr:
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=cwd,
                    start_new_session=True,  # Ctrl-C on the terminal is ours to handle, not the gahp's
                )
        except OSError as exc:
            raise GahpFailure(f"cannot run the gahp {argv[0]}: {exc}") from exc
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self.client = GahpClient()
        self.notified = False

    # ------------------------------------------------------------ raw I/O
    def _trace(self, prefix: str, line: str) -> None:
        if self.trace is not None:
            self.trace.write(f"{prefix} {line}\n")
            self.trace.flush()

    def _write(self, data: bytes) -> None:
        self._trace(">", data[:-2].decode("utf-8", "replace"))
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise GahpDied(f"the gahp closed its stdin ({exc})") from exc

    def send(self, line: str) -> None:
        self._write(self.client.send_line(line))

    def _fill(self, until: float, *, interruptible: bool) -> bool:
        """Read more output. False when ``until`` passed, or a signal arrived and ``interruptible``."""
        while True:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select([self._fd, self.interrupts.fd], [], [], remaining)
            if self.interrupts.fd in ready:
                self.interrupts.drain()
                if self.interrupts.count >= self.hard_level:
                    raise HardStop()
                if interruptible:
                    return False
            if self._fd in ready:
                try:
                    chunk = os.read(self._fd, 65536)
                except OSError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    raise GahpDied(f"cannot read the gahp's stdout: {exc}") from exc
                if not chunk:
                    raise GahpDied("the gahp closed its stdout")
                self.client.receive_data(chunk)
                return True

    def _event(self, until: float, *, interruptible: bool) -> Line | None:
        """The next event, or None when ``until`` passed (or a signal, if ``interruptible``)."""
        while True:
            try:
                event = self.client.next_event()
            except ProtocolError as exc:
                raise GahpFailure(f"the gahp broke the protocol: {exc}") from exc
            if isinstance(event, Closed):  # not met: _fill raises GahpDied at EOF, the client is never told
                raise GahpDied("the gahp closed its stdout")
            if event is not NEED_DATA:
                for line in (event.line, *getattr(event, "lines", ())):
                    self._trace("<", line)
                return event
            if not self._fill(until, interruptible=interruptible):
                return None

    def read_line(self, timeout: float) -> str:
        """The next line, whatever it is (a first interrupt does not cut it short);
        for a RESULTS reply, its ``S <n>`` line."""
        return self._next(timeout).line

    def _next(self, timeout: float) -> Line:
        until = time.monotonic() + timeout
        while True:
            event = self._event(until, interruptible=False)
            if event is not None:
                return event
            if time.monotonic() >= until:
                raise GahpFailure(f"no answer from the gahp within {timeout:.0f} s")

    @staticmethod
    def is_notification(line: str) -> bool:
        return protocol.is_notification(protocol.argv_words(line))  # read_argv: any one-word R... line

    def _answer(self, timeout: float) -> Line:
        """The next event that is not an ``R`` notification (those are noted)."""
        while True:
            event = self._next(timeout)
            if not isinstance(event, Notification):
                return event
            self.notified = True

    def reply(self, timeout: float = REPLY_TIMEOUT) -> str:
        """The next line that is not an ``R`` notification."""
        return self._answer(timeout).line

    def exchange(self, line: str, timeout: float = REPLY_TIMEOUT) -> Reply:
        self.send(line)
        answer = self._answer(timeout)
        assert isinstance(answer, Reply), answer
        return answer

    def command(self, line: str, timeout: float = REPLY_TIMEOUT) -> str:
        return self.exchange(line, timeout).line

    def idle(self, until: float) -> None:
        """Wait for an ``R``, a signal, or ``until``."""
        while True:
            event = self._event(until, interruptible=True)
            if event is None:
                return
            if isinstance(event, Notification):
                self.notified = True
                return
            # Nothing else may arrive unasked; the starter ignores it too.

    # ------------------------------------------------------------ protocol
    def read_banner(self, timeout: float = BANNER_TIMEOUT) -> str:
        """Everything before the first ``$`` is skipped; backslashes are dropped."""
        event = self._next(timeout)
        assert isinstance(event, Banner), event  # the client's first event
        return event.version

    def new_id(self) -> int:
        return self.client.new_id()

    def submit(self, command: str, argument: str) -> int:
        """Send a VM command; its immediate reply must be ``S``."""
        request_id, data = self.client.request(command, argument)
        self._write(data)
        reply = self._answer(REPLY_TIMEOUT)
        if not (isinstance(reply, Reply) and reply.ok):
            raise GahpFailure(f"{command} was refused: {reply.line!r}")
        return request_id

    def poll(self) -> None:
        """``RESULTS``: collect every finished result (the client stores them)."""
        self.notified = False
        self.send("RESULTS")
        batch = self._answer(REPLY_TIMEOUT)
        assert isinstance(batch, Results), batch

    def take(self, request_id: int) -> Result | None:
        return self.client.take(request_id)

    def abandon(self, request_id: int) -> None:
        """Forget a request (its result, when it comes, is dropped)."""
        self.client.abandon(request_id)

    def wait_result(self, request_id: int, timeout: float) -> Result:
        """A blocking request: poll on ``R`` or every 2 s until the result is in."""
        until = time.monotonic() + timeout
        while request_id not in self.client.results:
            now = time.monotonic()
            if now >= until:
                self.abandon(request_id)
                raise GahpFailure(f"request {request_id} got no result within {timeout:.0f} s")
            if not self.notified:
                self.idle(min(until, now + BLOCKING_POLL))
            self.poll()
        return self.client.results.pop(request_id)

    def call(self, command: str, argument: str, timeout: float) -> Result:
        return self.wait_result(self.submit(command, argument), timeout)

    # ------------------------------------------------------------ ending
    def quit(self, timeout: float = QUIT_TIMEOUT) -> int | None:
        """``QUIT``, then wait for the process. Its exit status, or None if it had to be killed."""
        if self.proc.poll() is None:
            try:
                reply = self.command("QUIT", timeout)
                if not reply.startswith("S"):
                    self._trace("!", f"QUIT answered {reply!r}")
            except GahpDied:
                pass
            except GahpFailure:
                self.kill()
        return self.wait_exit()

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass


def gahp_command(server: str | None) -> list[str]:
    """The gahp binary (the starter's VM_GAHP_SERVER): by default, this vmgahp."""
    return [server] if server else [sys.executable, "-m", "vmgahp"]


def kill_mode(vm_type: str, vm_name: str, env: dict[str, str], server: str | None = None) -> tuple[int | None, str]:
    """``vmgahp -f -M 4 vmtype T match NAME``, as the starter runs it after every job."""
    argv = gahp_command(server) + ["-f", "-M", "4", "vmtype", vm_type, "match", vm_name]
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, cwd="/", timeout=KILL_MODE_TIMEOUT,
            start_new_session=True, check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"kill mode did not finish within {KILL_MODE_TIMEOUT:.0f} s"
    return done.returncode, done.stderr.decode(errors="replace").strip()
