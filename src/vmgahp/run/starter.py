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

This module is the starter's policy (what to send when, what a reply means
for the job); the process and its pipes are :mod:`vmgahp.run.gahp`, the
protocol itself :mod:`vmgahp.protocol.client`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from vmgahp.protocol import tokens
from vmgahp.protocol.status import STATES, Status, parse_status
from vmgahp.run.gahp import Gahp, GahpDied, GahpFailure, HardStop, Interrupts, gahp_command, kill_mode
from vmgahp.run.progress import Progress
from vmgahp.run.submit import quote

HARD_QUIT_TIMEOUT = 20.0

NEEDED_COMMANDS = (
    "ASYNC_MODE_ON", "CLASSAD", "CLASSAD_END", "CONDOR_VM_START", "CONDOR_VM_STATUS",
    "CONDOR_VM_GETPID", "CONDOR_VM_STOP", "CONDOR_VM_CHECKPOINT", "RESULTS", "QUIT",
)  # fmt: skip

def explain_start_failure(token: str) -> tuple[bool, str]:
    """(held?, one sentence) for a START failure token, as condor_starter decides
    (vm_proc.cpp, spec 6.3): the hint and the hold subcode are the token table's."""
    entry = tokens.lookup(token)
    if entry.holds:
        what = (f"on a pool the job would be HELD (HoldReasonCode 6 = FailedToCreateProcess, "
                f"subcode {entry.hold_subcode}, HoldReason {token!r}): the job itself must be fixed")
    else:
        what = ("on a pool the job would be REQUEUED and the machine would stop offering VM universe "
                f"(HasVM = false, VMOfflineReason {token!r}): the starter blames the machine, not the job")
    return entry.holds, (f"{entry.hint}; {what}" if entry.hint else what)


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
                token = tokens.INTERNAL
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
        reply = gahp.exchange("COMMANDS")
        if not reply.ok:
            raise GahpFailure(f"COMMANDS failed: {reply.line!r}")
        offered = {word.upper() for word in reply.words[1:]}
        missing = [name for name in NEEDED_COMMANDS if name not in offered]
        if missing:
            raise GahpFailure(f"the gahp does not offer {', '.join(missing)} (VMGAHP_REQ_COMMAND_NOT_SUPPORTED)")
        reply = gahp.exchange("SUPPORT_VMS")
        types = {word.lower() for word in reply.words[1:]}
        if not reply.ok or self.vm_type not in types:
            raise GahpFailure(
                f"the gahp does not support vm_type {self.vm_type} (SUPPORT_VMS: {reply.line!r}); "
                "is its hypervisor library installed? (VMGAHP_REQ_VMTYPE_NOT_SUPPORTED)"
            )
        if not gahp.exchange("ASYNC_MODE_ON").ok:
            raise GahpFailure("ASYNC_MODE_ON failed")
        if not gahp.exchange("CLASSAD").ok:
            raise GahpFailure("CLASSAD failed")
        gahp.send(f"VM_WORKING_DIR = {quote(str(self.scratch))}")  # always first (vm_gahp_server.cpp)
        for line in self.ad_lines:
            gahp.send(line)
        if not gahp.exchange("CLASSAD_END").ok:
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
            status = parse_status(result.text) if result.ok and result.text.upper() != "NULL" else None
            if status is None or status.state not in STATES:
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
                status = status._replace(cpu_time=self.outcome.last_status.cpu_time)  # the starter keeps it
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
                outcome.checkpoint_error = result.text or tokens.INTERNAL
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
