"""condor_starter's side of the VM GAHP, emulated with the real starter's waits.

``vmgahp run`` (src/vmgahp/run/starter.py) drives the gahp the starter's way
but waits less. This module keeps the waits, because they decide what the
gahp sees (spec section 6, ``vm_gahp_server.cpp``, ``vm_proc.cpp``):

* every line written ends in CRLF, job-ad lines too; the banner is read (text
  before the ``$`` and backslashes skipped) and VERSION is never sent;
* COMMANDS, SUPPORT_VMS, ASYNC_MODE_ON, CLASSAD, ``VM_WORKING_DIR`` first and
  then the whole job ad (a 1 s pause after each 2 KiB of it), CLASSAD_END;
* ``nowPending``: the request id (the first is 2) goes into the table, the
  line is written, **1 s** of sleep, then one line that must start with S;
* ``getPendingResult``: **1 s** of sleep, then one ``poll`` (normal mode) or,
  blocking, ``poll`` until the result is in, **2 s** between polls, the
  timeout checked only there;
* ``poll``: RESULTS, **1 s** of sleep, ``S <n>`` and n result lines, each
  stored in its request (unknown ids are ignored);
* ``read_argv``: one byte at a time, a backslash makes the next byte literal,
  CR is ignored, a space ends a word, LF ends the line; a word of 10 KiB or
  more is an ASSERT (the starter crashes: :class:`StarterCrashed`); a line of
  one word starting with R is thrown away and schedules one more ``poll``;
* while idle, output on the gahp's stdout runs ``poll`` (``pipe_ready``);
* START is blocking (VM_GAHP_REQ_TIMEOUT + 120 s) and its result must have
  exactly 3 words; then 30 s of sleep, then a blocking CONDOR_VM_GETPID;
* STATUS every VM_STATUS_INTERVAL (the first one interval after the start):
  the unfinished previous one is abandoned, a normal-mode request is sent and
  polled once, its result parsed when it arrives, an error when it has not
  arrived one second before the next tick; five errors in a row and the
  starter gives up; ``STATUS=Stopped`` is the end of the job: QUIT, then kill
  mode ``-M 4 vmtype T match NAME``;
* suspend is CONDOR_VM_SUSPEND (CONDOR_VM_SOFT_SUSPEND with VM_SOFT_SUSPEND),
  resume is CONDOR_VM_RESUME then CONDOR_VM_GETPID, stop is CONDOR_VM_STOP
  then QUIT and kill mode, all blocking with VM_GAHP_REQ_TIMEOUT;
* the gahp's stderr goes to /dev/null.

The 30 s before GETPID and the status interval are parameters so tests can
shorten them; the 1 s / 2 s rhythm of every exchange is kept by default.
Where the real starter would block for ever (a gahp that never answers) the
emulation gives up after ``read_timeout`` and raises :class:`GahpHung`.

The wire rules (read_argv, the banner, RESULTS, request ids and the request
table) are ``vmgahp.protocol.client``'s; this module keeps the waits, the
event loop and the starter's decisions.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vmgahp.protocol.client import (
    MAX_WORD,
    NEED_DATA,
    Banner,
    GahpClient,
    Notification,
    ProtocolError,
    Results,
    WordTooLong,
    argv_words,
)
from vmgahp.protocol.status import STATES, parse_status
from vmgahp.protocol.wire import strtol

ARGV_BUFFER = MAX_WORD  # read_argv's static buffer: the limit is per word
AD_CHUNK = 2048  # publishVMClassAd pauses after this many bytes of attributes
STATUS_MAX_ERRORS = 5  # VM_STATUS_MAX_ERROR


class StarterError(Exception):
    """What makes the real starter give up on the job (handleFTL, EXCEPT, DC_SIGHARDKILL)."""


class StarterCrashed(StarterError):
    """read_argv's ASSERT: a reply word of 10 KiB or more."""


class GahpHung(StarterError):
    """No byte within ``read_timeout`` (the real starter would wait for ever)."""


class GahpGone(StarterError):
    """EOF on the gahp's stdout."""


@dataclass
class Request:
    request_id: int
    command: str
    deadline: float
    result: list[str] | None = None
    cancelled: bool = False

    @property
    def done(self) -> bool:
        return self.result is not None

    @property
    def valid(self) -> bool:
        """hasValidResult: exactly three words."""
        return self.result is not None and len(self.result) == 3

    @property
    def ok(self) -> bool:
        """checkResult: valid and the second word is 0."""
        return self.valid and self.result[1] == "0"  # type: ignore[index]

    @property
    def text(self) -> str:
        return self.result[2] if self.valid else ""  # type: ignore[index]


@dataclass
class StatusReport:
    at: float
    words: list[str]
    state: str | None  # None: the starter counted an error


@dataclass
class Wire:
    """Everything that crossed the pipes, in order: ('>', bytes, t) written, ('<', words, t) read."""

    events: list[tuple[str, object, float]] = field(default_factory=list)

    def add(self, kind: str, data: object) -> None:
        self.events.append((kind, data, time.monotonic()))

    def written(self) -> list[bytes]:
        return [data for kind, data, _ in self.events if kind == ">"]  # type: ignore[misc]

    def writes(self) -> list[tuple[str, float]]:
        """(line without CRLF, when) for every line written."""
        return [(data[:-2].decode(), at) for kind, data, at in self.events if kind == ">"]  # type: ignore[index]

    def read(self) -> list[list[str]]:
        return [words for kind, words, _ in self.events if kind == "<"]  # type: ignore[misc]


class StarterEmulation:
    def __init__(
        self,
        gahp: list[str],
        *,
        env: dict[str, str],
        working_dir: Path,
        job_ad: list[str],
        vm_type: str,
        vm_name: str,
        getpid_delay: float = 30.0,
        status_interval: float = 30.0,
        pause: float = 1.0,
        blocking_poll: float = 2.0,
        request_timeout: float = 300.0,
        soft_suspend: bool = False,
        read_timeout: float = 300.0,
    ) -> None:
        self.gahp = gahp
        self.env = env
        self.working_dir = Path(working_dir)
        self.job_ad = job_ad
        self.vm_type = vm_type
        self.vm_name = vm_name
        self.getpid_delay = getpid_delay
        self.status_interval = status_interval
        self.pause = pause
        self.blocking_poll = blocking_poll
        self.request_timeout = request_timeout  # VM_GAHP_REQ_TIMEOUT
        self.soft_suspend = soft_suspend  # VM_SOFT_SUSPEND
        self.read_timeout = read_timeout
        self.wire = Wire()
        self.proc: subprocess.Popen | None = None
        self.version = ""
        self.commands: list[str] = []
        self.vm_types: list[str] = []
        self.vm_id = 0
        self.vm_pid = 0
        self.is_suspended = False
        self.job_ended = False
        self.exit_status: int | None = None
        self.kill_mode: subprocess.CompletedProcess | None = None
        self.statuses: list[StatusReport] = []
        self.client = GahpClient()
        self._table: dict[int, Request] = {}  # requests waiting for their result
        self._poll_soon = False
        self._status_due: float | None = None
        self._status_request: Request | None = None
        self._status_notify: float | None = None
        self._status_ready: Request | None = None
        self._status_errors = 0

    # ------------------------------------------------------------- process
    def spawn(self) -> None:
        self.proc = subprocess.Popen(
            self.gahp + ["-f", "-M", "3"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=self.env, cwd=self.working_dir, start_new_session=True,
        )

    def kill(self) -> None:
        """Test clean-up: the gahp's process group, if it is still there."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    # ------------------------------------------------------------- wire
    def _write(self, data: bytes) -> None:
        self.wire.add(">", data)
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise GahpGone(f"write of {data!r} failed: {exc}") from exc

    def write_line(self, line: str) -> None:
        assert "\n" not in line and "\r" not in line, line
        self._write(self.client.send_line(line))

    def _event(self):
        """The next event; bytes are read only when the client needs them."""
        while True:
            try:
                event = self.client.next_event()
            except WordTooLong as exc:
                raise StarterCrashed(str(exc)) from exc
            except ProtocolError as exc:
                raise StarterError(str(exc)) from exc
            if event is not NEED_DATA:
                return event
            assert self.proc is not None and self.proc.stdout is not None
            fd = self.proc.stdout.fileno()
            ready, _, _ = select.select([fd], [], [], self.read_timeout)
            if not ready:
                raise GahpHung(f"no output from the gahp in {self.read_timeout:g} s")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise GahpGone("EOF on the gahp's stdout")
            self.client.receive_data(chunk)

    def _readable(self) -> bool:
        if self.client.buffered:
            return True
        assert self.proc is not None and self.proc.stdout is not None
        return bool(select.select([self.proc.stdout.fileno()], [], [], 0)[0])

    def _answer(self):
        """The next event that is not an R line (those schedule one more poll)."""
        while True:
            event = self._event()
            if isinstance(event, Results):
                self.wire.add("<", list(event.words))
                for line in event.lines:
                    self.wire.add("<", argv_words(line))
            elif not isinstance(event, Banner):
                self.wire.add("<", list(event.words))
            if not isinstance(event, Notification):
                return event
            self._poll_soon = True  # poll_real_soon(), and read on

    def read_argv(self) -> list[str]:
        """One line's words (read_argv)."""
        return list(self._answer().words)

    def read_banner(self) -> str:
        """command_version: skip to the first ``$``, drop backslashes, up to LF."""
        event = self._event()
        assert isinstance(event, Banner), event
        self.version = event.version
        self.wire.add("<", [self.version])
        return self.version

    def simple_command(self, command: str) -> list[str]:
        """COMMANDS, SUPPORT_VMS, ASYNC_MODE_ON, CLASSAD(_END), QUIT: write, 1 s, one line."""
        self.write_line(command)
        time.sleep(self.pause)
        reply = self.read_argv()
        if not reply or not reply[0].startswith("S"):
            raise StarterError(f"VMGAHP command '{command}' failed: {reply}")
        return reply

    # --------------------------------------------------------- requests
    def now_pending(self, command: str, argument: str, timeout: float) -> Request:
        request_id, data = self.client.request(command, argument)
        request = Request(request_id, command, time.monotonic() + timeout)
        self._table[request_id] = request
        self._write(data)
        time.sleep(self.pause)
        reply = self.read_argv()
        if not reply or not reply[0].startswith("S"):
            raise StarterError(f"Bad {command} Request: {reply}")
        return request

    def poll(self) -> int:
        self.write_line("RESULTS")
        time.sleep(self.pause)
        batch = self._answer()
        assert isinstance(batch, Results), batch
        for item in batch.results:
            result = self.client.take(item.request_id)  # None: unknown or cancelled, ignored
            request = self._table.pop(item.request_id, None)
            if result is not None and request is not None:
                request.result = list(result.words)
                if request is self._status_request:
                    self._status_ready = request  # its user timer: parsed back in the event loop
        return len(batch.lines)

    def get_pending_result(self, request: Request, blocking: bool) -> None:
        time.sleep(self.pause)
        if request.done:
            return
        if not blocking:
            self.poll()
            return
        while True:
            self.poll()
            if request.done or time.monotonic() > request.deadline:
                return
            time.sleep(self.blocking_poll)

    def blocking(self, command: str, argument: str, timeout: float | None = None) -> Request:
        request = self.now_pending(command, argument, self.request_timeout if timeout is None else timeout)
        self.get_pending_result(request, blocking=True)
        if not request.done:
            raise StarterError(f"VM GAHP command('{command}') exceeds timeout")
        return request

    # ------------------------------------------------------------- the job
    def start_job(self) -> Request:
        """VMProc::StartJob: handshake, the ad, START, 30 s, GETPID, the status timer."""
        self.spawn()
        self.read_banner()
        self.commands = self.simple_command("COMMANDS")[1:]
        self.vm_types = self.simple_command("SUPPORT_VMS")[1:]
        if "ASYNC_MODE_ON" not in {c.upper() for c in self.commands}:
            raise StarterError("no ASYNC_MODE_ON (the starter would poll every 5 s instead)")
        self.simple_command("ASYNC_MODE_ON")
        if "CONDOR_VM_START" not in {c.upper() for c in self.commands}:
            raise StarterError("VMGAHP_REQ_COMMAND_NOT_SUPPORTED")
        if self.vm_type.lower() not in {t.lower() for t in self.vm_types}:
            raise StarterError("VMGAHP_REQ_VMTYPE_NOT_SUPPORTED")
        self.publish_ad()
        start = self.blocking("CONDOR_VM_START", self.vm_type, self.request_timeout + 120)
        if not start.valid:
            raise StarterError(f"START result {start.result}: VMGAHP_ERR_INTERNAL")
        if not start.ok:
            return start  # held or requeued (spec 6.3); the caller decides
        self.vm_id = strtol(start.text)
        if self.vm_id <= 0:
            raise StarterError(f"START gave VM id {start.text!r}")
        time.sleep(self.getpid_delay)
        self.vm_pid = self.pid_of_vm()
        self._status_due = time.monotonic() + self.status_interval
        return start

    def publish_ad(self) -> None:
        self.simple_command("CLASSAD")
        self.write_line(f'VM_WORKING_DIR = "{self.working_dir}"')
        sent = 0
        for line in self.job_ad:
            self.write_line(line)
            sent += len(line)
            if sent > AD_CHUNK:
                time.sleep(self.pause)
                sent = 0
        self.simple_command("CLASSAD_END")

    def pid_of_vm(self) -> int:
        request = self.blocking("CONDOR_VM_GETPID", str(self.vm_id))
        if not request.ok:
            return 0
        return max(0, strtol(request.text))

    def suspend(self) -> Request | None:
        """VMProc::Suspend."""
        if self.is_suspended:
            return None
        command = "CONDOR_VM_SOFT_SUSPEND" if self.soft_suspend else "CONDOR_VM_SUSPEND"
        request = self.blocking(command, str(self.vm_id))
        if not request.ok:
            if request.text != "VMGAHP_ERR_VM_NO_SUPPORT_SUSPEND":
                self._status_due = time.monotonic()  # the VM may just have ended
            return request
        if not self.soft_suspend:
            self.vm_pid = 0
        self.is_suspended = True
        return request

    def resume(self) -> Request:
        """VMProc::Continue: RESUME (any failure ends the starter), then GETPID."""
        request = self.blocking("CONDOR_VM_RESUME", str(self.vm_id))
        if not request.ok:
            raise StarterError(f"Failed to resume the VM ({request.result}): internalVMGahpError")
        self.vm_pid = self.pid_of_vm()
        self.is_suspended = False
        return request

    def stop(self) -> Request:
        """ShutdownFast (condor_rm, hold): STOP, then QUIT and kill mode."""
        request = self.blocking("CONDOR_VM_STOP", str(self.vm_id))
        self.is_suspended = False
        self.cleanup()
        return request

    def cleanup(self) -> None:
        """VMGahpServer::cleanup: QUIT, close the pipes, kill mode, 1 s; then the reaper."""
        self._status_due = None
        self.job_ended = True
        assert self.proc is not None
        if self.proc.poll() is None:
            self.simple_command("QUIT")
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if self.vm_id > 0:
            self.kill_mode = subprocess.run(
                self.gahp + ["-f", "-M", "4", "vmtype", self.vm_type, "match", self.vm_name],
                stdin=subprocess.DEVNULL, capture_output=True, env=self.env, cwd="/", timeout=120,
            )
            self.vm_id = 0
        time.sleep(self.pause)
        self.exit_status = self.proc.wait(timeout=60)

    # ------------------------------------------------------- the event loop
    def run_for(self, seconds: float) -> None:
        self.run_until(lambda: False, seconds, raise_on_timeout=False)

    def run_until(self, done: Callable[[], bool], timeout: float, *, raise_on_timeout: bool = True,
                  check_every: float = 0.5) -> None:
        """DaemonCore's loop: status timer, pipe_ready, poll_real_soon; ``done`` checked between events."""
        end = time.monotonic() + timeout
        next_check = 0.0
        while not self.job_ended:
            now = time.monotonic()
            if now >= next_check:
                if done():
                    return
                next_check = now + check_every
            if now >= end:
                if raise_on_timeout:
                    raise TimeoutError(f"not done within {timeout:g} s")
                return
            if self._status_ready is not None:
                request, self._status_ready = self._status_ready, None
                self._status_arrived(request)
                continue
            if self._poll_soon:
                self._poll_soon = False
                self.poll()
                continue
            if self._status_notify is not None and now >= self._status_notify:
                self._status_notify = None
                self._status_request = None
                self._status_error(["(no result before the notify timer)"])
                continue
            if self._status_due is not None and now >= self._status_due:
                self._check_status()
                continue
            if self._readable():
                self.poll()  # pipe_ready
                continue
            wake = min(t for t in (end, next_check, self._status_due, self._status_notify) if t is not None)
            assert self.proc is not None and self.proc.stdout is not None
            select.select([self.proc.stdout.fileno()], [], [], max(0.0, wake - time.monotonic()))

    def _check_status(self) -> None:
        """CheckStatus: one NORMAL-mode STATUS, polled once."""
        self._status_due = time.monotonic() + self.status_interval
        previous = self._status_request
        if previous is not None and not previous.done:
            self._table.pop(previous.request_id, None)
            self.client.abandon(previous.request_id)  # cancelPendingRequest: the id stays reserved
        request = self.now_pending("CONDOR_VM_STATUS", str(self.vm_id), self.status_interval - 3)
        self._status_request = request
        self._status_notify = time.monotonic() + self.status_interval - 1
        self.get_pending_result(request, blocking=False)

    def _status_arrived(self, request: Request) -> None:
        self._status_request = None
        self._status_notify = None
        words = request.result or []
        state = None
        if len(words) >= 3 and words[1] == "0" and words[2].upper() != "NULL":
            status = parse_status(" ".join(words[2:]))
            state = status.state if status is not None else None
        if state not in STATES:
            self._status_error(words)
            return
        self._status_errors = 0
        self.statuses.append(StatusReport(time.monotonic(), words, state))
        if state == "Stopped":
            self.vm_pid = 0
            self.is_suspended = False
            self.cleanup()  # the VM has finished: QUIT, kill mode
        elif state == "Running":
            self.is_suspended = False
        elif state in ("Suspended", "SoftSuspended"):
            self.is_suspended = True

    def _status_error(self, words: list[str]) -> None:
        self.statuses.append(StatusReport(time.monotonic(), words, None))
        self._status_errors += 1
        if self._status_errors >= STATUS_MAX_ERRORS:
            raise StarterError("Internal error occurred while managing the VM")

