"""Real tiny guests driven through a gahp process: the fixtures and helpers the
real-guest tests share (tests/real/), as h11 keeps its tests/helpers.py.

Domain names are ``alice_example.org_<cluster>.0`` with clusters from
``CLUSTER_BASE`` (per pytest process, so parallel sessions do not collide).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from gahp_process import GahpProcess
from guest_fixture import read_guest_file
from helpers import TESTS

JOB_UID = JOB_GID = 1000
MEMORY_MIB = 128
BOOT_TIMEOUT = 90.0  # boot + run of the guest under TCG is ~10 s; leave room for a loaded host
TRANSCRIPT_06 = TESTS / "transcripts" / "shared" / "06_vm_exits_by_itself.txt"
TRANSCRIPT_06_DISK = "/var/lib/condor/execute/dir_4242/testvm.qcow2"
# Domain names are <User>_<ClusterId>.<ProcId>. Other sessions on a shared libvirtd
# use alice_example.org_42.0 (and kill it by name): this session's jobs get
# cluster ids of their own.
CLUSTER_BASE = 500_000 + (os.getpid() % 10_000) * 10
TRANSCRIPT_06_CLUSTER = CLUSTER_BASE + 6
TRANSCRIPT_06_DOMAIN = f"alice_example.org_{TRANSCRIPT_06_CLUSTER}.0"


# ------------------------------------------------------------------ fixtures
@pytest.fixture
def scratch() -> Iterator[Path]:
    """The job's working dir, as the starter makes it: 0755, reachable by the job user."""
    path = Path(tempfile.mkdtemp(prefix="vmgahp-guest-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def domains(libvirt_uri: str) -> Iterator[list[str]]:
    """Names of domains a test may leave behind; destroyed at teardown."""
    names: list[str] = []
    yield names
    import libvirt

    conn = libvirt.open(libvirt_uri)
    try:
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            if dom.name() in names:
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    pass
    finally:
        conn.close()


@pytest.fixture
def gahps() -> Iterator[list[GahpProcess]]:
    started: list[GahpProcess] = []
    yield started
    for gahp in started:
        gahp.kill()


# ------------------------------------------------------------------- helpers
def domain_name(cluster: int) -> str:
    return f"alice_example.org_{cluster}.0"


def domain_state(uri: str, name: str) -> int | None:
    """libvirt's state of domain ``name``, None when there is none (a transient domain that ended)."""
    import libvirt

    conn = libvirt.open(uri)
    try:
        for dom in conn.listAllDomains():
            if dom.name() == name:
                try:
                    return dom.state()[0]
                except libvirt.libvirtError:
                    return None  # gone meanwhile
        return None
    finally:
        conn.close()


def job_ad(work: Path, disks: str, cluster: int) -> list[str]:
    """The attributes the starter sends for a kvm job with ``vm_disk = disks``."""
    return [
        f'VM_WORKING_DIR = "{work}"',
        f"ClusterId = {cluster}",
        "ProcId = 0",
        'User = "alice@example.org"',
        'Owner = "alice"',
        'Cmd = "tiny"',
        "JobUniverse = 13",
        'JobVMType = "kvm"',
        f"JobVMMemory = {MEMORY_MIB}",
        "JobVM_VCPUS = 1",
        "JobVMCheckpoint = false",
        "JobVMNetworking = false",
        f'VMPARAM_vm_Disk = "{disks}"',
    ]


def start_guest(
    work: Path, uri: str, disks: str, cluster: int, gahps: list, domains: list, **knobs: str
) -> GahpProcess:
    gahp = GahpProcess(work, VM_KVM_LIBVIRT_URI=uri, VM_KVM_DOMAIN_TYPE="qemu", **knobs)
    gahps.append(gahp)
    domains.append(domain_name(cluster))
    gahp.handshake()
    gahp.send_ad(job_ad(work, disks, cluster))
    assert gahp.call("CONDOR_VM_START", "kvm", timeout=60) == (True, "1"), gahp.stderr_tail()
    return gahp


def status(gahp: GahpProcess) -> str:
    ok, text = gahp.call("CONDOR_VM_STATUS", "1")
    assert ok, text
    return text


def wait_for_status(gahp: GahpProcess, word: str, timeout: float = BOOT_TIMEOUT, every: float = 0.5) -> str:
    """Poll STATUS, as the starter's status timer does, until STATUS=<word>."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = status(gahp)
        if text.split()[0] == f"STATUS={word}":
            return text
        time.sleep(every)
    raise AssertionError(f"STATUS={word} not reached within {timeout:g} s; last {text!r}; log: {gahp.stderr_tail()}")


def progress(disk: Path) -> list[str]:
    return (read_guest_file(disk, "progress.txt") or "").splitlines()


def ticks(disk: Path) -> list[int]:
    return [int(m.group(1)) for line in progress(disk) if (m := re.fullmatch(r"tick (\d+)", line))]


def wait_for_ticks(disk: Path, count: int, timeout: float = BOOT_TIMEOUT) -> list[int]:
    deadline = time.monotonic() + timeout
    seen: list[int] = []
    while time.monotonic() < deadline:
        seen = ticks(disk)
        if len(seen) >= count:
            return seen
        time.sleep(0.3)
    raise AssertionError(f"the guest wrote {len(seen)} ticks, not {count}, within {timeout:g} s")


def assert_finished_in_one_run(disk: Path, n_ticks: int) -> None:
    """One boot, ticks 1..N once each, in order, then the DONE line."""
    assert progress(disk) == ["boot 1 after tick 0"] + [f"tick {k}" for k in range(1, n_ticks + 1)]
    result = read_guest_file(disk, "result.txt") or ""
    assert result.splitlines()[-1:] == ["TINY-GUEST DONE rc=0"], result
    assert f"ticks={n_ticks} boots=1" in result


def quit_gahp(gahp: GahpProcess) -> None:
    assert gahp.reply("QUIT") == "S"
    assert gahp.wait(timeout=60) == 0


# --------------------------------------------------------------------- tests
