"""Drive ``vmgahp -f -M 3`` exactly as condor_starter drives condor_vm-gahp.

The conversation is the starter's (spec section 6): banner, ``COMMANDS``,
``SUPPORT_VMS``, ``ASYNC_MODE_ON``, the ``CLASSAD`` block (``VM_WORKING_DIR``
first), ``CONDOR_VM_START``, ``CONDOR_VM_GETPID``, then ``CONDOR_VM_STATUS``
every status interval until the VM is ``Stopped``, then ``QUIT`` and kill mode
(``-M 4 vmtype T match NAME``). A vacate checkpoints (when the job asked for
it), stops and quits. Request ids start at 2, lines end in CRLF, and a lone
``R`` line (anywhere) means "results are waiting".

Differences from the starter, all about waiting less: no one-second sleeps
after each line, no 30-second pause before ``GETPID``, and a status interval
of seconds rather than ``VM_STATUS_INTERVAL``'s minimum of 30.

Everything here is single-threaded: one ``select`` loop over the gahp's
stdout and a signal wake-up pipe, so Ctrl-C is seen at once but never splits
a command from its reply.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from vmgahp import errors
from vmgahp.run.progress import Progress, Status
from vmgahp.run.submit import quote

BANNER_TIMEOUT = 90.0  # the gahp checks its configuration and the hypervisor first (up to 30 s)
REPLY_TIMEOUT = 60.0  # an immediate S/E reply; the real starter would wait forever
BLOCKING_POLL = 2.0  # a blocking request polls RESULTS this often (vm_gahp_server.cpp)
QUIT_TIMEOUT = 60.0  # QUIT destroys the VMs first (bounded by the gahp)
EXIT_TIMEOUT = 30.0
KILL_MODE_TIMEOUT = 90.0
HARD_QUIT_TIMEOUT = 20.0

NEEDED_COMMANDS = (
    "ASYNC_MODE_ON", "CLASSAD", "CLASSAD_END", "CONDOR_VM_START", "CONDOR_VM_STATUS",
    "CONDOR_VM_GETPID", "CONDOR_VM_STOP", "CONDOR_VM_CHECKPOINT", "RESULTS", "QUIT",
)  # fmt: skip

# What a START failure means on a pool (vm_proc.cpp, spec 6.3), beyond hold/requeue.
TOKEN_HINTS = {
    errors.NO_JOBCLASSAD_INFO: "the gahp got no usable job ad",
    errors.NO_SUPPORTED_VM_TYPE: "the job's vm_type is not the type this gahp runs",
    errors.JOBCLASSAD_NO_VM_MEMORY_PARAM: "the ad has no JobVMMemory",
    errors.JOBCLASSAD_TOO_MUCH_MEMORY_REQUEST: "vm_memory is more than the machine's VM_MEMORY allows",
    errors.JOBCLASSAD_MISMATCHED_NETWORKING: "the job wants vm_networking but VM_NETWORKING is off here",
    errors.JOBCLASSAD_MISMATCHED_NETWORKING_TYPE: "vm_networking_type is not one of VM_NETWORKING_TYPE",
    errors.JOBCLASSAD_MISMATCHED_HARDWARE_VT: "the job needs hardware virtualization (VM_HARDWARE_VT is off)",
    errors.KVM_NO_DISK_PARAM: "the job has no vm_disk",
    errors.KVM_INVALID_DISK_PARAM: "a vm_disk file is missing, not readable/writable by the job user, or malformed",
    errors.KVM_MISMATCHED_CHECKPOINT: "vm_checkpoint with transferred disks needs vm_snapshot_disk = true",
    errors.XEN_NO_DISK_PARAM: "the job has no vm_disk",
    errors.XEN_INVALID_DISK_PARAM: "a vm_disk file is missing, not readable/writable by the job user, or malformed",
    errors.XEN_MISMATCHED_CHECKPOINT: "vm_checkpoint with transferred disks needs vm_snapshot_disk = true",
    errors.XEN_NO_KERNEL_PARAM: "the job has no xen_kernel",
    errors.XEN_KERNEL_NOT_FOUND: "the xen_kernel file cannot be read",
    errors.XEN_INITRD_NOT_FOUND: "the xen_initrd file cannot be read",
    errors.XEN_NO_ROOT_DEVICE_PARAM: "a xen_kernel file needs xen_root",
    errors.BAD_IMAGE: "the hypervisor rejected a disk image (or a checkpoint could not be restored)",
    errors.CANNOT_READ_CDROM_FILE: "a vm_cdrom_files file cannot be read",
    errors.CANNOT_CREATE_ISO_FILE: "the CD-ROM image could not be built",
    errors.CRITICAL: "the gahp could not build the VM (name or domain description)",
    errors.INTERNAL: "the hypervisor failed or timed out (see the gahp log)",
}


def explain_start_failure(token: str) -> tuple[bool, str]:
    """(held?, one sentence) for a START failure token, as condor_starter decides."""
    hint = TOKEN_HINTS.get(token, "")
    if token in errors.HOLD_TOKENS:
        index = errors.HOLD_TOKENS.index(token)
        what = (f"on a pool the job would be HELD (HoldReasonCode 6 = FailedToCreateProcess, "
                f"subcode {index}, HoldReason {token!r}): the job itself must be fixed")
    else:
        what = ("on a pool the job would be REQUEUED and the machine would stop offering VM universe "
                f"(HasVM = false, VMOfflineReason {token!r}): the starter blames the machine, not the job")
    return token in errors.HOLD_TOKENS, (f"{hint}; {what}" if hint else what)


class GahpFailure(Exception):
    """The gahp died, hung, or broke the protocol."""


class GahpDied(GahpFailure):
    pass


class HardStop(Exception):
    """A second interrupt: stop everything now."""


@dataclass(frozen=True)
class Result:
    ok: bool
    text: str


def split_words(line: str) -> list[str]:
    """The starter's ``read_argv``: a backslash makes the next byte literal, spaces split."""
    words, current, escaped = [], [], False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "\r":
            continue
        elif char == " ":
            words.append("".join(current))
            current = []
        else:
            current.append(char)
    words.append("".join(current))
    return words


class Interrupts:
    """SIGINT and SIGTERM, counted; a pipe wakes the select loop when one arrives."""

    def __init__(self) -> None:
        self.count = 0
        self.signal_name = ""
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
            fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        self._saved: dict[int, object] = {}
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
            signal.signal(signum, handler)  # type: ignore[arg-type]
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
        self._buffer = b""
        self._results: dict[int, Result] = {}
        self._abandoned: set[int] = set()
        self.notified = False
        self._next_id = 1  # new_reqid() increments first: the first id is 2

    # ------------------------------------------------------------ raw I/O
    def _trace(self, prefix: str, line: str) -> None:
        if self.trace is not None:
            self.trace.write(f"{prefix} {line}\n")
            self.trace.flush()

    def send(self, line: str) -> None:
        self._trace(">", line)
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line.encode() + b"\r\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise GahpDied(f"the gahp closed its stdin ({exc})") from exc

    def _pop_line(self) -> str | None:
        if b"\n" not in self._buffer:
            return None
        raw, self._buffer = self._buffer.split(b"\n", 1)
        line = raw.decode(errors="replace")
        self._trace("<", line)
        return line

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
                self._buffer += chunk
                return True

    def read_line(self, timeout: float) -> str:
        """The next line, whatever it is (a first interrupt does not cut it short)."""
        until = time.monotonic() + timeout
        while True:
            line = self._pop_line()
            if line is not None:
                return line
            if not self._fill(until, interruptible=False) and time.monotonic() >= until:
                raise GahpFailure(f"no answer from the gahp within {timeout:.0f} s")

    @staticmethod
    def is_notification(line: str) -> bool:
        words = split_words(line)
        return len(words) == 1 and words[0].startswith("R")  # read_argv: any one-word R... line

    def reply(self, timeout: float = REPLY_TIMEOUT) -> str:
        """The next line that is not an ``R`` notification."""
        while True:
            line = self.read_line(timeout)
            if self.is_notification(line):
                self.notified = True
                continue
            return line

    def command(self, line: str, timeout: float = REPLY_TIMEOUT) -> str:
        self.send(line)
        return self.reply(timeout)

    def idle(self, until: float) -> None:
        """Wait for an ``R``, a signal, or ``until``."""
        while True:
            line = self._pop_line()
            if line is not None:
                if self.is_notification(line):
                    self.notified = True
                    return
                continue  # nothing else may arrive unasked; the starter ignores it too
            if not self._fill(until, interruptible=True):
                return

    # ------------------------------------------------------------ protocol
    def read_banner(self, timeout: float = BANNER_TIMEOUT) -> str:
        """Everything before the first ``$`` is skipped; backslashes are dropped."""
        until = time.monotonic() + timeout
        while True:
            line = self.read_line(max(0.1, until - time.monotonic()))
            if "$" in line:
                return line[line.index("$") :].replace("\\", "")

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def submit(self, command: str, argument: str) -> int:
        """Send a VM command; its immediate reply must be ``S``."""
        request_id = self.new_id()
        reply = self.command(f"{command} {request_id} {argument}")
        if not reply.startswith("S"):
            raise GahpFailure(f"{command} was refused: {reply!r}")
        return request_id

    def poll(self) -> None:
        """``RESULTS``: collect every finished result."""
        self.notified = False
        reply = self.command("RESULTS")
        words = split_words(reply)
        if len(words) < 2 or not words[0].startswith("S"):
            raise GahpFailure(f"bad RESULTS reply {reply!r}")
        try:
            count = int(words[1])
        except ValueError as exc:
            raise GahpFailure(f"bad RESULTS reply {reply!r}") from exc
        for _ in range(count):
            words = split_words(self.reply())
            try:
                request_id = int(words[0])
            except ValueError:
                continue  # "Bad RESULTS line": skipped, as the starter does
            if request_id <= 0 or len(words) < 2:
                continue
            if request_id in self._abandoned:
                self._abandoned.discard(request_id)
                continue
            text = " ".join(words[2:]) if len(words) > 2 else ""
            self._results[request_id] = Result(words[1] == "0", text)

    def take(self, request_id: int) -> Result | None:
        return self._results.pop(request_id, None)

    def abandon(self, request_id: int) -> None:
        """Forget a request (its result, when it comes, is dropped)."""
        if self._results.pop(request_id, None) is None:
            self._abandoned.add(request_id)

    def wait_result(self, request_id: int, timeout: float) -> Result:
        """A blocking request: poll on ``R`` or every 2 s until the result is in."""
        until = time.monotonic() + timeout
        while request_id not in self._results:
            now = time.monotonic()
            if now >= until:
                self.abandon(request_id)
                raise GahpFailure(f"request {request_id} got no result within {timeout:.0f} s")
            if not self.notified:
                self.idle(min(until, now + BLOCKING_POLL))
            self.poll()
        return self._results.pop(request_id)

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


def log_details(log_path: Path, request_id: int | None = None, limit: int = 5) -> list[str]:
    """Readable reasons from the gahp's JSON log (the wire only carries tokens)."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or event.get("level") not in ("warning", "error", "critical"):
            continue
        if request_id is not None and event.get("req_id") not in (request_id, None):
            continue
        detail = event.get("detail") or event.get("exception") or ""
        found.append(f"{event.get('event', '?')}: {detail}".rstrip(": "))
    return found[-limit:]


# --------------------------------------------------------------------------
# The starter's side of one job
# --------------------------------------------------------------------------

STOPPED, VACATED, KILLED, START_FAILED, FAILED = "stopped", "vacated", "killed", "start_failed", "failed"


@dataclass
class Outcome:
    kind: str
    reason: str = ""  # vacate: "interrupt" or "max-wall"; failures: what went wrong
    token: str | None = None  # START failure
    gahp_exit: int | None = None
    vm_started: float | None = None  # time.monotonic() when START succeeded
    vm_ended: float | None = None
    last_status: Status | None = None
    checkpoint_dir: Path | None = None
    checkpoint_error: str | None = None
    stop_error: str | None = None
    details: list[str] = field(default_factory=list)
    kill_mode: str = ""

    @property
    def wall(self) -> float:
        if self.vm_started is None:
            return 0.0
        return (self.vm_ended or time.monotonic()) - self.vm_started


@dataclass
class StarterSettings:
    status_interval: float = 2.0
    max_wall: float | None = None
    start_timeout: float = 420.0  # VM_GAHP_REQ_TIMEOUT + 120
    request_timeout: float = 300.0  # VM_GAHP_REQ_TIMEOUT
    status_max_errors: int = 5  # VM_STATUS_MAX_ERROR


class Starter:
    """Runs one job's VM through the starter's sequence and says how it ended."""

    def __init__(
        self,
        *,
        vm_type: str,
        vm_name: str,
        checkpoint: bool,
        ad_lines: list[str],
        scratch: Path,
        env: dict[str, str],
        log_path: Path,
        stderr_path: Path,
        settings: StarterSettings,
        progress: Progress,
        interrupts: Interrupts,
        on_checkpoint: Callable[[], Path],
        trace: TextIO | None = None,
        server: str | None = None,
    ) -> None:
        self.server = server
        self.vm_type = vm_type
        self.vm_name = vm_name
        self.checkpoint = checkpoint
        self.ad_lines = ad_lines
        self.scratch = scratch
        self.env = env
        self.log_path = log_path
        self.stderr_path = stderr_path
        self.settings = settings
        self.progress = progress
        self.interrupts = interrupts
        self.on_checkpoint = on_checkpoint
        self.trace = trace
        self.outcome = Outcome(FAILED)
        self.gahp: Gahp | None = None
        self._start_sent = False

    def run(self) -> Outcome:
        outcome = self.outcome
        try:
            self._run()
        except HardStop:
            self._hard_stop()
        except GahpFailure as exc:
            outcome.kind, outcome.reason = FAILED, str(exc)
            outcome.details = self._failure_details()
            self._abandon_gahp()
        finally:
            if outcome.vm_started is not None and outcome.vm_ended is None:
                outcome.vm_ended = time.monotonic()
            if self._start_sent:
                code, text = kill_mode(self.vm_type, self.vm_name, self.env, self.server)
                outcome.kill_mode = "ok" if code == 0 else f"exit {code}: {text}"
            if self.gahp is not None:
                self.gahp.close()
        return outcome

    # ---------------------------------------------------------------- phases
    def _run(self) -> None:
        say = self.progress.say
        gahp = self.gahp = Gahp(
            gahp_command(self.server) + ["-f", "-M", "3"], self.env, self.scratch, self.stderr_path,
            self.interrupts, self.trace,
        )
        try:
            gahp.read_banner()
        except GahpDied as exc:
            code = gahp.wait_exit(10)
            raise GahpFailure(f"the gahp exited (status {code}) before its banner: it refused to start") from exc
        self._handshake(gahp)
        if self.interrupts.count:
            self.outcome.kind, self.outcome.reason = VACATED, "interrupt"
            self.outcome.gahp_exit = gahp.quit()
            return
        say(f"starting the VM {self.vm_name} (CONDOR_VM_START)...")
        self._start_sent = True
        request_id = gahp.submit("CONDOR_VM_START", self.vm_type)
        result = gahp.wait_result(request_id, self.settings.start_timeout)
        if not result.ok:
            token = (result.text.split() or ["NULL"])[0]
            if token.upper() == "NULL":  # the starter reads NULL as VMGAHP_ERR_INTERNAL
                token = errors.INTERNAL
            self.outcome.kind, self.outcome.token = START_FAILED, token
            self.outcome.details = log_details(self.log_path, request_id)
            self.outcome.gahp_exit = gahp.quit()
            return
        vm_id = result.text.strip()
        if not vm_id.isdigit() or int(vm_id) <= 0:
            raise GahpFailure(f"CONDOR_VM_START succeeded with a bad VM id {result.text!r}")
        self.outcome.vm_started = time.monotonic()
        say(f"the VM is up (vm id {vm_id}); polling its status every {self.settings.status_interval:g} s"
            " - Ctrl-C vacates it" + (" with a checkpoint" if self.checkpoint else ""))
        if not self.interrupts.count:
            gahp.call("CONDOR_VM_GETPID", vm_id, self.settings.request_timeout)
        reason = self._poll_status(gahp, vm_id)
        if reason == STOPPED:
            self.outcome.vm_ended = time.monotonic()
            self.progress.clear()
            say("the VM stopped by itself; QUIT")
            self.outcome.kind = STOPPED
            self.outcome.gahp_exit = gahp.quit()
            return
        self._vacate(gahp, vm_id, reason)

    def _handshake(self, gahp: Gahp) -> None:
        reply = gahp.command("COMMANDS")
        if not reply.startswith("S"):
            raise GahpFailure(f"COMMANDS failed: {reply!r}")
        offered = {word.upper() for word in split_words(reply)[1:]}
        missing = [name for name in NEEDED_COMMANDS if name not in offered]
        if missing:
            raise GahpFailure(f"the gahp does not offer {', '.join(missing)} (VMGAHP_REQ_COMMAND_NOT_SUPPORTED)")
        reply = gahp.command("SUPPORT_VMS")
        types = {word.lower() for word in split_words(reply)[1:]}
        if not reply.startswith("S") or self.vm_type not in types:
            raise GahpFailure(
                f"the gahp does not support vm_type {self.vm_type} (SUPPORT_VMS: {reply!r}); "
                "is its hypervisor library installed? (VMGAHP_REQ_VMTYPE_NOT_SUPPORTED)"
            )
        if not gahp.command("ASYNC_MODE_ON").startswith("S"):
            raise GahpFailure("ASYNC_MODE_ON failed")
        if not gahp.command("CLASSAD").startswith("S"):
            raise GahpFailure("CLASSAD failed")
        gahp.send(f"VM_WORKING_DIR = {quote(str(self.scratch))}")  # always first (vm_gahp_server.cpp)
        for line in self.ad_lines:
            gahp.send(line)
        if not gahp.command("CLASSAD_END").startswith("S"):
            raise GahpFailure("CLASSAD_END failed")

    def _poll_status(self, gahp: Gahp, vm_id: str) -> str:
        """STATUS every interval until Stopped, an interrupt, or --max-wall."""
        settings = self.settings
        started = self.outcome.vm_started or time.monotonic()
        errors_in_a_row = 0
        pending: int | None = None
        next_tick = time.monotonic() + settings.status_interval
        while True:
            if self.interrupts.count:
                self.progress.clear()
                return "interrupt"
            now = time.monotonic()
            if settings.max_wall is not None and now - started >= settings.max_wall:
                self.progress.clear()
                return "max-wall"
            if now < next_tick:
                until = next_tick if settings.max_wall is None else min(next_tick, started + settings.max_wall)
                gahp.idle(until)
                if gahp.notified:
                    gahp.poll()
            else:
                next_tick = now + settings.status_interval
                if pending is not None:  # the last one never answered: one error
                    gahp.abandon(pending)
                    errors_in_a_row += 1
                pending = gahp.submit("CONDOR_VM_STATUS", vm_id)
                gahp.poll()
            if pending is None:
                continue
            result = gahp.take(pending)
            if result is None:
                if errors_in_a_row >= settings.status_max_errors:
                    raise GahpFailure(f"{errors_in_a_row} status polls in a row failed "
                                      "(the starter would give up: 'Internal error occurred while managing the VM')")
                continue
            pending = None
            status = Status.parse(result.text) if result.ok and result.text.upper() != "NULL" else None
            if status is None or status.state not in ("Running", "Suspended", "SoftSuspended", "Stopped"):
                errors_in_a_row += 1
                self.progress.say(f"bad status reply {result.text!r} ({errors_in_a_row}/{settings.status_max_errors})")
                if errors_in_a_row >= settings.status_max_errors:
                    raise GahpFailure(f"{errors_in_a_row} status polls in a row failed "
                                      "(the starter would give up: 'Internal error occurred while managing the VM')")
                continue
            errors_in_a_row = 0
            if status.state == "Stopped":
                return STOPPED
            if status.cpu_time is None and self.outcome.last_status is not None:
                status.cpu_time = self.outcome.last_status.cpu_time
            self.outcome.last_status = status
            self.progress.update(status, time.monotonic() - started)

    def _vacate(self, gahp: Gahp, vm_id: str, reason: str) -> None:
        outcome = self.outcome
        outcome.kind, outcome.reason = VACATED, reason
        why = "interrupted" if reason == "interrupt" else f"--max-wall {self.settings.max_wall:g} s reached"
        if self.checkpoint:
            self.progress.say(f"{why}: vacating with a checkpoint (CONDOR_VM_CHECKPOINT; Ctrl-C again kills)...")
            result = gahp.call("CONDOR_VM_CHECKPOINT", vm_id, self.settings.request_timeout)
            if result.ok:
                try:
                    outcome.checkpoint_dir = self.on_checkpoint()
                except OSError as exc:
                    outcome.checkpoint_error = f"copying the checkpoint failed: {exc}"
            else:
                outcome.checkpoint_error = result.text or errors.INTERNAL
                outcome.details = log_details(self.log_path)
        else:
            self.progress.say(f"{why}: vacating (CONDOR_VM_STOP; Ctrl-C again kills)...")
        result = gahp.call("CONDOR_VM_STOP", vm_id, self.settings.request_timeout)
        if not result.ok:
            outcome.stop_error = result.text
        outcome.vm_ended = time.monotonic()
        outcome.gahp_exit = gahp.quit()

    def _hard_stop(self) -> None:
        outcome = self.outcome
        self.progress.say("interrupted again: killing the VM (QUIT, then kill mode)")
        outcome.kind = KILLED
        if self.gahp is None:
            return
        gahp = self.gahp
        gahp.interrupts.count = 0  # further Ctrl-C may not cut the cleanup short
        gahp.hard_level = 1 << 30
        if gahp.proc.poll() is None:
            try:
                gahp.send("QUIT")  # destroys the VMs; its reply may be lost in the interrupted exchange
            except GahpDied:
                pass
        outcome.gahp_exit = gahp.wait_exit(HARD_QUIT_TIMEOUT)

    def _abandon_gahp(self) -> None:
        if self.gahp is None:
            return
        self.gahp.hard_level = 1 << 30  # the clean-up runs to its end
        if self.gahp.proc.poll() is None:
            self.outcome.gahp_exit = self.gahp.quit(HARD_QUIT_TIMEOUT)
        else:
            self.outcome.gahp_exit = self.gahp.proc.returncode

    def _failure_details(self) -> list[str]:
        details = log_details(self.log_path)
        try:
            stderr = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            stderr = []
        return details + [f"gahp stderr: {line}" for line in stderr[-5:]]
