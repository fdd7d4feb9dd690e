"""A vmgahp daemon process driven over pipes, for tests that script it directly.

Transcripts cover fixed conversations; these tests need timing, signals and
real hypervisors, so they talk to the process programmatically. Framing,
replies and results are the protocol client's (``vmgahp.protocol.client``);
this is the process and its pipes.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from vmgahp.protocol.client import NEED_DATA, GahpClient, Notification, Results
from vmgahp.protocol.env import gahp_environment

TOP = Path(__file__).resolve().parents[1]
# The installed entry-point script, next to this interpreter: for the tests that
# run the gahp as condor_starter does (VM_GAHP_SERVER names one executable).
VMGAHP = Path(sys.executable).parent / "vmgahp"
GAHP_ARGV = (sys.executable, "-m", "vmgahp")  # this interpreter's vmgahp, wherever the venv is


def gahp_env(work: Path, **knobs: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_CONDOR_", "VMGAHP_", "CONDOR_CONFIG"))}
    env.update(
        CONDOR_CONFIG="/dev/null",
        _CONDOR_VM_MEMORY="1024",
        _CONDOR_VM_KVM_LIBVIRT_URI="test:///default",
        _CONDOR_VM_GAHP_LOG=str(work / "vmgahp.log"),
        **gahp_environment("kvm", str(work), 1000, 1000),
    )
    for name, value in knobs.items():
        env[name if name.startswith(("VMGAHP_", "CONDOR")) else f"_CONDOR_{name}"] = value
    return env


def job_ad(work: Path, disk: str = "disk.img:vda:w:raw", **extra: str) -> list[str]:
    lines = [
        f'VM_WORKING_DIR = "{work}"',
        "ClusterId = 42",
        "ProcId = 0",
        'User = "alice@example.org"',
        'JobVMType = "kvm"',
        "JobVMMemory = 128",
        f'VMPARAM_vm_Disk = "{disk}"',
    ]
    lines += [f"{name} = {value}" for name, value in extra.items()]
    return lines


class GahpProcess:
    def __init__(
        self, work: Path, argv: tuple[str, ...] = ("-f", "-M", "3"), launcher: tuple[str, ...] = (), **knobs: str
    ) -> None:
        """``launcher``: a command that runs the gahp (its argv follows) and relays its pipes,
        e.g. a stand-in for the starter that a test may SIGKILL."""
        self.work = work
        self.proc = subprocess.Popen(
            [*launcher, *GAHP_ARGV, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=gahp_env(work, **knobs),
            cwd=work,
            start_new_session=True,
        )
        self.client = GahpClient()
        self._lines: deque[str] = deque()  # the rest of a RESULTS reply, for readline()

    # ------------------------------------------------------------- raw lines
    def next_event(self, timeout: float = 30.0):
        """The protocol client's next event, reading as needed."""
        end = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while (event := self.client.next_event()) is NEED_DATA:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line from vmgahp within {timeout} s; stderr: {self.stderr_tail()}")
            if select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EOFError(f"vmgahp closed stdout; stderr: {self.stderr_tail()}")
                self.client.receive_data(chunk)
        return event

    def readline(self, timeout: float = 30.0) -> str:
        """The next line as it came (banner, R and result lines included)."""
        if self._lines:
            return self._lines.popleft()
        event = self.next_event(timeout)
        self._lines.extend(getattr(event, "lines", ()))
        return event.line

    def send(self, line: str) -> None:
        self.proc.stdin.write(self.client.send_line(line))
        self.proc.stdin.flush()

    def reply(self, line: str, timeout: float = 30.0) -> str:
        """Send a command and return its reply, skipping R notifications."""
        self.send(line)
        while True:
            event = self.next_event(timeout)
            if not isinstance(event, Notification):
                self._lines.extend(getattr(event, "lines", ()))
                return event.line

    # --------------------------------------------------------- conversation
    def handshake(self) -> str:
        banner = self.readline()
        assert banner.startswith("$VMGahpVersion "), banner
        for command in ("COMMANDS", "SUPPORT_VMS", "ASYNC_MODE_ON"):
            assert self.reply(command).startswith("S"), command
        return banner

    def send_ad(self, lines: list[str]) -> None:
        assert self.reply("CLASSAD") == "S"
        for line in lines:
            self.send(line)
        assert self.reply("CLASSAD_END") == "S"

    @property
    def next_id(self) -> int:
        return self.client.last_id

    def submit(self, command: str, argument: str) -> int:
        request_id, data = self.client.request(command, argument)
        self.proc.stdin.write(data)
        self.proc.stdin.flush()
        assert self._answer(30.0).line == "S"
        return request_id

    def _answer(self, timeout: float):
        while isinstance(event := self.next_event(timeout), Notification):
            pass
        return event

    def collect(self) -> set[int]:
        """One RESULTS poll that does not wait; the ids whose results have
        arrived and are not yet taken. With requests running and nothing to
        report the gahp holds a RESULTS (docs/protocol.md); the VERSION right
        behind it releases it at once."""
        self.send("RESULTS")
        self.send("VERSION")
        assert isinstance(self._answer(30.0), Results)
        assert self._answer(30.0).line.startswith("S")
        return set(self.client.results)

    def result(self, request_id: int, timeout: float = 60.0) -> tuple[bool, str]:
        """Poll RESULTS until the result of ``request_id`` arrives."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.collect()
            found = self.client.take(request_id)
            if found is not None:
                return found.ok, found.text
            time.sleep(0.02)
        raise TimeoutError(f"no result for request {request_id}")

    def call(self, command: str, argument: str, timeout: float = 60.0) -> tuple[bool, str]:
        return self.result(self.submit(command, argument), timeout)

    # --------------------------------------------------------------- ending
    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr_tail(self) -> str:
        log = self.work / "vmgahp.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return text[-2000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
