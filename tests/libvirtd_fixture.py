"""A session fixture that makes sure a real libvirtd serves qemu:///system.

If ``/run/libvirt/libvirt-sock`` already accepts connections, that daemon is
used and left alone. Otherwise libvirtd is started by hand (there is no
systemd here), its pid kept, and at the end of the session it is stopped by
that pid and nothing else. Tests that use it are skipped, with the reason,
when the ``libvirtd`` binary is not installed; a daemon that is installed but
does not come up is an error, not a skip (scripts/setup.sh prepares it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

__all__ = ["Libvirtd", "libvirt_socket", "libvirt_uri", "libvirtd", "socket_served"]

SYSTEM_SOCKET = "/run/libvirt/libvirt-sock"
SYSTEM_URI = "qemu:///system"
START_TIMEOUT = 20.0
# The first qemu:///system call probes QEMU's capabilities (~8 s here).
WARMUP_TIMEOUT = 90.0


@dataclass(frozen=True)
class Libvirtd:
    uri: str
    pid: int | None  # None: a daemon we did not start
    log_path: Path | None
    socket: str = SYSTEM_SOCKET


def socket_served(path: str = SYSTEM_SOCKET) -> bool:
    """True when something accepts connections on the unix socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is not serving anything.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _start(workdir: Path) -> Libvirtd:
    binary = shutil.which("libvirtd")
    if binary is None:
        pytest.skip("libvirtd is not installed (run scripts/setup.sh)")
    pid_file = workdir / "libvirtd.pid"
    log_path = workdir / "libvirtd.log"
    env = dict(os.environ, LIBVIRT_LOG_OUTPUTS=f"3:file:{log_path}")
    # -d forks the daemon off; the pid file names the daemon, not this child.
    subprocess.run([binary, "-d", "-p", str(pid_file)], env=env, timeout=START_TIMEOUT, check=False)
    deadline = time.monotonic() + START_TIMEOUT
    pid = None
    while time.monotonic() < deadline:
        pid = pid or _read_pid(pid_file)
        if socket_served():
            break
        if pid is not None and not _alive(pid):
            pid = None  # ours died; another session's daemon may still come up
        time.sleep(0.1)
    else:
        if pid is not None:
            _stop(pid)
        pytest.fail(f"libvirtd did not serve {SYSTEM_SOCKET} within {START_TIMEOUT:g} s; see {log_path}")
    if pid is not None and not _alive(pid):
        pid = None  # lost a race with another session: its daemon serves us
    return Libvirtd(SYSTEM_URI, pid, log_path)


def _warm_up(daemon: Libvirtd) -> None:
    virsh = shutil.which("virsh")
    if virsh is None:
        return
    result = subprocess.run(
        [virsh, "-c", daemon.uri, "version"], capture_output=True, text=True, timeout=WARMUP_TIMEOUT, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"virsh -c {daemon.uri} version failed: {result.stderr.strip()} (log: {daemon.log_path})")


def _stop(pid: int, timeout: float = 15.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _running_daemon_serves() -> bool:
    """A libvirtd that is already running (slow to answer under load) gets
    time to answer: a second one would take over and then delete its sockets."""
    ours = os.readlink("/proc/self/ns/mnt")

    def is_libvirtd(pid: str) -> bool:
        # One in another mount namespace (tests/private_libvirtd.py) serves its own socket.
        try:
            return (Path(f"/proc/{pid}/comm").read_text().strip() == "libvirtd"
                    and os.readlink(f"/proc/{pid}/ns/mnt") == ours)
        except OSError:  # gone meanwhile
            return False

    if not any(is_libvirtd(pid) for pid in os.listdir("/proc") if pid.isdigit()):
        return False
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if socket_served():
            return True
        time.sleep(0.2)
    pytest.fail(f"a libvirtd is running but does not serve {SYSTEM_SOCKET} within {START_TIMEOUT:g} s")


@pytest.fixture(scope="session")
def libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Libvirtd]:
    """A running libvirtd for qemu:///system (started here only if needed)."""
    if socket_served() or _running_daemon_serves():
        daemon = Libvirtd(SYSTEM_URI, None, None)
    else:
        daemon = _start(tmp_path_factory.mktemp("libvirtd"))
    try:
        _warm_up(daemon)
        yield daemon
    finally:
        if daemon.pid is not None:
            _stop(daemon.pid)


@pytest.fixture(scope="session")
def libvirt_uri(libvirtd: Libvirtd) -> str:
    """The URI of the running libvirtd (qemu:///system)."""
    return libvirtd.uri


@pytest.fixture(scope="session")
def libvirt_socket(libvirtd: Libvirtd) -> str:
    """The unix socket that libvirtd serves (for proxies that inject faults)."""
    return libvirtd.socket
