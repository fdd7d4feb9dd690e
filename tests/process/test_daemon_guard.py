"""The daemon never dies of its input, and never ends without destroying its VMs.

In process: a real :class:`Daemon` and :class:`GahpSession` over real pipes,
with a stand-in runtime that records what it is asked (and can be told to
raise, to stand for a bug anywhere below the command loop).
"""

from __future__ import annotations

import os
import select
import threading
from pathlib import Path

from gahp_process import GahpProcess
from vmgahp.gahp.daemon import Daemon
from vmgahp.protocol.session import GahpSession

BANNER = "$VMGahpVersion 0.0.1 x vmgahp-test $"


class RecordingRuntime:
    def __init__(self, fail_submit: bool = False) -> None:
        self.fail_submit = fail_submit
        self.submitted: list[int] = []
        self.closed = 0

    def prepare_for_start(self) -> None:
        pass

    def submit(self, request) -> None:
        if self.fail_submit:
            raise RuntimeError("a bug below the command loop")
        self.submitted.append(request.request_id)

    def close(self) -> None:
        self.closed += 1


class Served:
    """``Daemon.serve`` on pipes, in the main thread's stead: serve() installs
    signal handlers, which only the main thread may, so this runs its loop
    and its ``finally`` (the part under test) in a thread."""

    def __init__(self, runtime: RecordingRuntime) -> None:
        in_read, self.stdin = os.pipe()
        self.stdout, out_write = os.pipe()
        self.daemon = Daemon(GahpSession(("kvm",), BANNER), in_fd=in_read, out_fd=out_write)
        self.daemon.runtime = runtime  # type: ignore[assignment]
        self.outcome: dict = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import selectors

        wake_read, _wake_write = os.pipe()
        selector = selectors.DefaultSelector()
        selector.register(self.daemon.in_fd, selectors.EVENT_READ, "stdin")
        selector.register(wake_read, selectors.EVENT_READ, "signal")
        try:
            self.outcome["code"] = self.daemon._loop(selector, wake_read)
        except BaseException as exc:  # noqa: BLE001 - recorded for the test
            self.outcome["error"] = exc
        finally:
            self.daemon.runtime.close()  # as serve()'s finally does
            selector.close()

    def finish(self) -> dict:
        self.thread.join(5)
        assert not self.thread.is_alive()
        return self.outcome


def read_lines(fd: int, count: int, timeout: float = 5.0) -> list[str]:
    data = b""
    while data.count(b"\n") < count:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"only {data!r} within {timeout} s"
        chunk = os.read(fd, 65536)
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data.decode().splitlines()


def test_a_line_whose_handling_raises_gets_E_and_the_loop_goes_on() -> None:
    runtime = RecordingRuntime()
    served = Served(runtime)
    session = served.daemon.session
    real = session.receive_line

    def receive(line):
        if line.startswith("VERSION"):
            raise RuntimeError("a bug in the session")
        return real(line)

    session.receive_line = receive  # type: ignore[method-assign]
    os.write(served.stdin, b"VERSION\r\nCOMMANDS\r\n")
    lines = read_lines(served.stdout, 2)
    assert lines[0] == "E"
    assert lines[1].startswith("S ASYNC_MODE_ON ")
    os.close(served.stdin)
    assert served.finish() == {"code": 0} and runtime.closed == 1


def test_a_request_whose_dispatch_raises_gets_one_reply_and_a_failed_result() -> None:
    """Its S is on the wire before the runtime raises: a second reply (E) would put
    every later reply one line off for the starter. The failure is its result."""
    runtime = RecordingRuntime(fail_submit=True)
    served = Served(runtime)
    os.write(served.stdin, b"CONDOR_VM_STATUS 2 1\r\nCOMMANDS\r\nRESULTS\r\n")
    lines = read_lines(served.stdout, 5)
    assert lines[:2] == ["S", "R"]  # one reply, then the result's notice
    assert lines[2].startswith("S ASYNC_MODE_ON ")
    assert lines[3:] == ["S 1", "2 1 VMGAHP_ERR_INTERNAL"]
    os.close(served.stdin)
    assert served.finish() == {"code": 0} and runtime.closed == 1


def test_an_exception_outside_the_line_guard_still_destroys_the_vms(monkeypatch) -> None:
    """Anything that escapes the loop passes through serve's finally: the VMs go first."""
    runtime = RecordingRuntime()
    served = Served(runtime)
    os.write(served.stdin, b"COMMANDS\r\n")
    read_lines(served.stdout, 1)

    class BrokenFramer:
        def feed(self, data: bytes) -> list[str]:
            raise MemoryError("the framer itself fails")

    monkeypatch.setattr(served.daemon, "_framer", BrokenFramer())
    os.write(served.stdin, b"COMMANDS\r\n")
    outcome = served.finish()
    assert isinstance(outcome.get("error"), MemoryError)
    assert runtime.closed == 1


def test_stdout_gone_ends_the_loop_and_destroys_the_vms() -> None:
    runtime = RecordingRuntime()
    served = Served(runtime)
    os.close(served.stdout)  # the starter went away
    os.write(served.stdin, b"COMMANDS\r\nCOMMANDS\r\n")
    assert served.finish() == {"code": 0} and runtime.closed == 1


HOSTILE = [
    (b"CONDOR_VM_GETPID " + b"9" * 5000 + b" 1", "E"),  # a request id beyond a C int
    (b"CONDOR_VM_START " + b"1" * 4301 + b" kvm", "E"),
    (b"CONDOR_VM_STATUS 2 " + b"7" * 5000, "S"),  # digits only: a VM id that names no VM
    (b"CONDOR_VM_STOP 0" + b"0" * 6000 + b"3 1", "S"),  # leading zeros: request id 3
    (b"RESULTS " + b"x" * 80000, "E"),
    (b"\x00\xff\xfe CONDOR_VM_STATUS \x00 \x00", "E"),
    (b"COMMANDS\x00", "E"),
    (b"\\" * 70001, "E"),
    (b"CONDOR_VM_START 4 \xe2\x84\xaavm", "E"),  # Kelvin sign: no ASCII 'k' for strcasecmp (fuzzer)
    (b"COMMANDS\\\xc3\xa9", "E"),  # the escape takes one byte of the last character (fuzzer)
]


def test_hostile_lines_over_pipes(tmp_path: Path) -> None:
    """Issue 7 defect 1: the real process answers every hostile line and lives on."""
    gahp = GahpProcess(tmp_path)
    try:
        gahp.handshake()
        for line, expected in HOSTILE:
            gahp.proc.stdin.write(line + b"\r\n")
            gahp.proc.stdin.flush()
            answer = gahp.readline(10)
            while answer == "R":
                answer = gahp.readline(10)
            assert answer == expected, line[:60]
        results = gahp.reply("RESULTS")
        assert results == "S 2"
        assert sorted(gahp.readline().split(" ", 1)[1] for _ in range(2)) == ["0 STATUS=Stopped",
                                                                              "1 VMGAHP_ERR_VM_NOT_FOUND"]
        assert gahp.reply("COMMANDS").startswith("S ASYNC_MODE_ON ")
        assert gahp.proc.poll() is None
    finally:
        gahp.kill()


def test_overlong_line_is_answered_not_kept(tmp_path: Path) -> None:
    """A 3 MiB line: E, and the daemon's memory does not grow by it."""
    gahp = GahpProcess(tmp_path)
    try:
        gahp.handshake()
        rss_before = _rss_kib(gahp.proc.pid)
        chunk = b"A" * (1 << 20)
        for _ in range(3):
            gahp.proc.stdin.write(chunk)
        gahp.proc.stdin.write(b"\r\n")
        gahp.proc.stdin.flush()
        assert gahp.readline(10) == "E"
        assert gahp.reply("COMMANDS").startswith("S ")
        assert _rss_kib(gahp.proc.pid) - rss_before < 2048
    finally:
        gahp.kill()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# ------------------------------------------------------- held RESULTS (issue 11)
def test_a_held_results_is_answered_when_the_result_comes() -> None:
    runtime = RecordingRuntime()
    served = Served(runtime)
    os.write(served.stdin, b"CONDOR_VM_CHECKPOINT 2 1\r\nRESULTS\r\n")
    assert read_lines(served.stdout, 1) == ["S"]
    ready, _, _ = select.select([served.stdout], [], [], 0.3)
    assert not ready  # held: the checkpoint is still running
    served.daemon.report(2, True, "")  # from a worker thread, in the real daemon
    assert read_lines(served.stdout, 3) == ["R", "S 1", "2 0 NULL"]
    os.write(served.stdin, b"QUIT\r\n")
    assert read_lines(served.stdout, 1) == ["S"]
    assert served.finish() == {"code": 0}


def test_a_held_results_gets_S_0_at_the_hold_limit() -> None:
    runtime = RecordingRuntime()
    served = Served(runtime)
    served.daemon.hold_limit = 0.5
    os.write(served.stdin, b"CONDOR_VM_CHECKPOINT 2 1\r\nRESULTS\r\n")
    assert read_lines(served.stdout, 2, timeout=5) == ["S", "S 0"]
    served.daemon.report(2, True, "")
    assert read_lines(served.stdout, 1) == ["R"]  # the result goes the usual way
    os.write(served.stdin, b"RESULTS\r\nQUIT\r\n")
    assert read_lines(served.stdout, 3) == ["S 1", "2 0 NULL", "S"]
    assert served.finish() == {"code": 0}
