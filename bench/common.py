"""What the benches share: a row of the report, medians, the daemon over
pipes, a real HTCondor configuration file, a libvirtd, process memory.

Every figure is a median of several runs, and every ratio is taken in the
same run against its baseline (a bare interpreter, raw libvirt-python, a
stand-in that blocks as the C++ gahp does), alternating the two sides so that
drift hits both alike.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP / "tests"))

from vmgahp.protocol.client import NEED_DATA, GahpClient  # noqa: E402 - after the sys.path set-up
from vmgahp.protocol.env import gahp_environment  # noqa: E402 - after the sys.path set-up

PYTHON = sys.executable
GAHP = [PYTHON, "-m", "vmgahp"]
SYSTEM_URI = "qemu:///system"
SYSTEM_SOCKET = "/run/libvirt/libvirt-sock"


def _compile_like_an_install() -> None:
    """pip writes an installed package's bytecode at install time; this
    checkout's editable source has none where PYTHONDONTWRITEBYTECODE is set
    (it is, on these machines), and every gahp spawned would compile its ~100
    modules again: ~30 ms of a ~80 ms banner that no installed gahp pays."""
    import compileall

    import vmgahp

    compileall.compile_dir(str(Path(vmgahp.__file__).parent), quiet=1)


_compile_like_an_install()


@dataclass
class Row:
    """One line of the report: our figure, its baseline, the target."""

    what: str
    ours: float
    unit: str  # "ms", "µs", "MB", "MiB", "s"
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""  # e.g. "<= 2x", "< 100 µs"
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.ours / self.baseline if self.baseline else None


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def alternate(runs: int, *sides: Callable[[], float]) -> list[list[float]]:
    """``runs`` samples of each side, taken in turn."""
    samples: list[list[float]] = [[] for _ in sides]
    for _ in range(runs):
        for index, side in enumerate(sides):
            samples[index].append(side())
    return samples


def timed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


# ----------------------------------------------------------- configuration
CONFIG = """\
# An execute node's configuration, as an admin writes it (not a test's /dev/null).
RELEASE_DIR = /usr
LOCAL_DIR = {local}
LOG = $(LOCAL_DIR)/log
SPOOL = $(LOCAL_DIR)/spool
EXECUTE = $(LOCAL_DIR)/execute
LOCK = $(LOG)
DAEMON_LIST = MASTER, STARTD
CONDOR_HOST = 127.0.0.1
ALLOW_WRITE = 127.0.0.1
UID_DOMAIN = example.org
FILESYSTEM_DOMAIN = example.org
NUM_CPUS = 2
START = TRUE
SUSPEND = FALSE
PREEMPT = FALSE
KILL = FALSE
VM_TYPE = kvm
VM_MEMORY = $(DETECTED_MEMORY) * 3 / 4
VM_MAX_NUMBER = $(NUM_CPUS)
VM_NETWORKING = false
VM_GAHP_LOG = $(LOG)/VMGahpLog
MAX_VM_GAHP_LOG = 10 MB
MAX_NUM_VM_GAHP_LOG = 2
VM_GAHP_REQ_TIMEOUT = 300
VM_KVM_LIBVIRT_URI = {uri}
VM_KVM_DOMAIN_TYPE = qemu
VM_STATUS_INTERVAL = 60
"""


def real_config(uri: str = "test:///default") -> Path:
    """A condor_config in a fresh LOCAL_DIR; its path."""
    local = Path(tempfile.mkdtemp(prefix="vmgahp-bench-node-"))
    (local / "log").mkdir()
    path = local / "condor_config"
    path.write_text(CONFIG.format(local=local, uri=uri))
    return path


def node_env(config: Path, work: Path, uid: int = 1000, **knobs: str) -> dict[str, str]:
    """The environment the starter gives its gahp on a node with ``config``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_CONDOR_", "VMGAHP_", "CONDOR_CONFIG"))}
    env["CONDOR_CONFIG"] = str(config)
    env.update(gahp_environment("kvm", str(work), uid, uid))
    env.update({f"_CONDOR_{name}": value for name, value in knobs.items()})
    return env


# ----------------------------------------------------------------- daemon
class Gahp:
    """The daemon over pipes, read through the protocol client."""

    def __init__(self, env: dict[str, str], cwd: Path, argv: list[str] | None = None) -> None:
        self.proc = subprocess.Popen(
            (argv or GAHP) + ["-f", "-M", "3"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, cwd=cwd, bufsize=0)
        self.client = GahpClient()
        self.banner = self.event().line

    def event(self):
        assert self.proc.stdout is not None
        while (event := self.client.next_event()) is NEED_DATA:
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise EOFError("the gahp closed stdout")
            self.client.receive_data(chunk)
        return event

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.client.send_line(text))

    def ask(self, text: str):
        self.send(text)
        return self.event()

    def request(self, command: str, argument: str):
        assert self.proc.stdin is not None
        request_id, data = self.client.request(command, argument)
        self.proc.stdin.write(data)
        return request_id, self.event()

    def handshake(self) -> None:
        for line in ("COMMANDS", "SUPPORT_VMS", "ASYNC_MODE_ON"):
            self.ask(line)

    def send_ad(self, lines: list[str]) -> None:
        self.ask("CLASSAD")
        for line in lines:
            self.send(line)
        self.ask("CLASSAD_END")

    def call(self, command: str, argument: str) -> tuple[bool, str]:
        """A request and its result, collected when the R arrives."""
        request_id, _ = self.request(command, argument)
        while True:
            found = self.client.take(request_id)
            if found is not None:
                return found.ok, found.text
            self.event()  # the R
            self.send("RESULTS")
            self.event()

    def close(self) -> None:
        try:
            self.send("QUIT")
            self.proc.wait(timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


# ----------------------------------------------------------------- memory
def memory_mb(pid: int) -> tuple[float, float, float]:
    """RSS, PSS and private (USS) of ``pid`` in MB, from smaps_rollup."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0])
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return fields["Rss"] / 1024, fields["Pss"] / 1024, private / 1024


# ---------------------------------------------------------------- libvirtd
def socket_served() -> bool:
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(1.0)
        sock.connect(SYSTEM_SOCKET)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def ensure_libvirtd() -> int | None:
    """Start libvirtd if nothing serves its socket; the pid we started, or None."""
    if socket_served():
        return None
    binary = shutil.which("libvirtd")
    if binary is None:
        raise SystemExit("libvirtd is not installed (scripts/setup.sh)")
    pid_file = Path(tempfile.mkdtemp(prefix="vmgahp-bench-libvirtd-")) / "pid"
    subprocess.run([binary, "-d", "-p", str(pid_file)], check=True, timeout=30)
    deadline = time.monotonic() + 30
    while not socket_served():
        if time.monotonic() > deadline:
            raise SystemExit("libvirtd did not come up")
        time.sleep(0.1)
    subprocess.run(["virsh", "-c", SYSTEM_URI, "version"], capture_output=True, timeout=120, check=False)
    return int(pid_file.read_text())
