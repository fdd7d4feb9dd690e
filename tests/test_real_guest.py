"""A real guest through the vmgahp daemon: the tiny guest under QEMU (TCG) and libvirtd.

The guest (tests/guest/make-tiny-guest.sh) boots from a disk-only image (FAT +
SYSLINUX), counts one-second ticks into ``progress.txt`` on its output disk,
writes ``result.txt`` ("... TINY-GUEST DONE rc=0") and powers itself off. Each
test gives the daemon a private copy of the image, owned by the job user
(uid 1000) in a 0755 scratch dir, exactly as the starter would, and reads the
guest's output back from that copy on the host (mtype / debugfs).

* a VM that ends by itself: Running, then Stopped, QUIT, output kept on the disk;
* the shared transcript 06_vm_exits_by_itself replayed against the real guest;
* CONDOR_VM_STOP: the ACPI power button reaches the guest, which powers off at once;
* soft suspend (pause) and hard suspend (memory saved to ``xen.mem.ckpt``) of one
  ticking guest: no tick while suspended, and after each RESUME the guest goes on
  from where it was (a single boot, ticks 1..N once each) and finishes.

One guest runs at a time; each test destroys what it started. The whole file
takes about 70 s on 2 cores (each boot of the guest under TCG and libvirt costs ~10 s).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

import transcript_runner as tr
from gahp_process import GahpProcess
from guest_fixture import TinyGuest, read_guest_file

pytestmark = pytest.mark.libvirtd

JOB_UID = JOB_GID = 1000
MEMORY_MIB = 128
BOOT_TIMEOUT = 90.0  # boot + run of the guest under TCG is ~10 s; leave room for a loaded host
TRANSCRIPT_06 = Path(__file__).resolve().parent / "transcripts" / "shared" / "06_vm_exits_by_itself.txt"
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
def test_guest_that_powers_off_is_stopped_and_keeps_its_output(
    tiny_guest: TinyGuest, scratch: Path, libvirt_uri: str, gahps: list, domains: list
) -> None:
    """qcow2 boot disk + a raw ext4 output disk: the result lands on the ext4 disk."""
    tiny_guest.boot_disk(scratch / "tiny.qcow2", ticks=2, fmt="qcow2", owner=(JOB_UID, JOB_GID))
    data = tiny_guest.data_disk(scratch / "data.img", owner=(JOB_UID, JOB_GID))
    cluster = CLUSTER_BASE + 1
    gahp = start_guest(scratch, libvirt_uri, "tiny.qcow2:vda:w:qcow2,data.img:vdb:w:raw", cluster, gahps, domains)
    assert status(gahp).startswith("STATUS=Running CPUUTILIZATION=")
    wait_for_status(gahp, "Stopped")
    assert domain_state(libvirt_uri, domain_name(cluster)) is None
    quit_gahp(gahp)
    assert_finished_in_one_run(data, 2)
    assert read_guest_file(scratch / "tiny.qcow2", "result.txt") is None  # the ext4 disk was the output disk


def test_stop_reaches_the_guest_as_an_acpi_power_off(
    tiny_guest: TinyGuest, scratch: Path, libvirt_uri: str, gahps: list, domains: list
) -> None:
    """CONDOR_VM_STOP presses the ACPI power button; the guest syncs and powers off.

    The guest handles the button (busybox acpid), so the STOP returns long before
    vmgahp's grace (VM_GAHP_SHUTDOWN_TIMEOUT, 30 s) would have it destroy the domain.
    """
    disk = tiny_guest.boot_disk(scratch / "tiny.img", ticks=60, owner=(JOB_UID, JOB_GID))
    cluster = CLUSTER_BASE + 4
    gahp = start_guest(scratch, libvirt_uri, "tiny.img:vda:w:raw", cluster, gahps, domains)
    wait_for_ticks(disk, 1)
    began = time.monotonic()
    assert gahp.call("CONDOR_VM_STOP", "1", timeout=60) == (True, "NULL")
    assert time.monotonic() - began < 15, "the guest ignored the power button: vmgahp had to destroy it"
    assert domain_state(libvirt_uri, domain_name(cluster)) is None
    assert status(gahp) == "STATUS=Stopped"
    quit_gahp(gahp)
    lines = progress(disk)
    assert lines[0] == "boot 1 after tick 0" and lines[-1] == "power button", lines
    assert read_guest_file(disk, "result.txt") is None  # stopped, not done


def _until_status(uri: str, name: str) -> Callable[[str], bool]:
    """Out-of-band check for the runner's @wait: has the domain reached ``status``?"""
    import libvirt

    def reached(status: str) -> bool:
        state = domain_state(uri, name)
        if status == "Stopped":
            return state in (None, libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED)
        if status == "Running":
            return state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED)
        return True

    return reached


def test_transcript_06_vm_exits_by_itself(
    tiny_guest: TinyGuest, scratch: Path, libvirt_uri: str, domains: list
) -> None:
    """The starter's conversation of 06 against a guest that really powers off.

    ``@wait`` does not sleep the starter's 30/60 s: before each STATUS the runner
    waits (out of band, through libvirt) until the guest is in the state the
    transcript expects, so the STATUS expecting Stopped comes after the power-off.
    """
    disk = tiny_guest.boot_disk(scratch / "testvm.qcow2", ticks=2, fmt="qcow2", owner=(JOB_UID, JOB_GID))
    domains.append(TRANSCRIPT_06_DOMAIN)
    transcript = tr.parse_transcript(TRANSCRIPT_06)
    assert transcript.skip_reason  # the fake-hypervisor run skips it; this test is where it runs
    outputs: dict[str, str | None] = {}

    def after_run(ws: tr.Workspace) -> None:
        outputs["result"] = read_guest_file(ws.scratch / "testvm.qcow2", "result.txt")
        outputs["progress"] = read_guest_file(ws.scratch / "testvm.qcow2", "progress.txt")

    opts = tr.Options(
        cmd=tr.default_cmd(),
        timeout=30.0,
        repoll_s=30.0,
        run_skipped=True,
        env={"_CONDOR_VM_KVM_LIBVIRT_URI": libvirt_uri, "_CONDOR_VM_KVM_DOMAIN_TYPE": "qemu"},
        file_sources={TRANSCRIPT_06_DISK: disk},
        until_status=_until_status(libvirt_uri, TRANSCRIPT_06_DOMAIN),
        until_timeout=BOOT_TIMEOUT,
        after_run=after_run,
        substitutions={"ClusterId = 42": f"ClusterId = {TRANSCRIPT_06_CLUSTER}"},
    )
    result = tr.run_transcript(transcript, opts)
    assert result.passed, result.report()
    assert (outputs["result"] or "").splitlines()[-1:] == ["TINY-GUEST DONE rc=0"], outputs
    assert outputs["progress"] == "boot 1 after tick 0\ntick 1\ntick 2\n"
    assert domain_state(libvirt_uri, TRANSCRIPT_06_DOMAIN) is None


SUSPEND_TICKS = 7
SUSPENDED_SECONDS = 2.0


def _suspended_without_ticks(gahp: GahpProcess, disk: Path, what: str) -> list[int]:
    """While suspended: STATUS=Suspended, and not one tick for a while."""
    assert status(gahp) == "STATUS=Suspended", what
    frozen = ticks(disk)
    time.sleep(SUSPENDED_SECONDS)
    assert ticks(disk) == frozen, f"the guest ticked while {what}"
    assert status(gahp) == "STATUS=Suspended", what
    assert len(frozen) < SUSPEND_TICKS, f"the guest finished before it was {what}: make it tick longer"
    return frozen


def test_soft_and_hard_suspend_of_a_ticking_guest(
    tiny_guest: TinyGuest, scratch: Path, libvirt_uri: str, gahps: list, domains: list
) -> None:
    """Soft suspend (pause), RESUME, hard suspend (memory to ``xen.mem.ckpt``), RESUME.

    Each time: STATUS=Suspended and no tick while suspended, Running after RESUME,
    and the guest goes on from where it was. A guest that was cold-booted again
    instead of restored would write a second "boot" line and restart its count
    from the disk; a restored one finishes its single run: ticks 1..N once each.
    """
    disk = tiny_guest.boot_disk(scratch / "tiny.img", ticks=SUSPEND_TICKS, owner=(JOB_UID, JOB_GID))
    cluster = CLUSTER_BASE + 2
    gahp = start_guest(scratch, libvirt_uri, "tiny.img:vda:w:raw", cluster, gahps, domains)
    seen = wait_for_ticks(disk, 1)

    # Soft suspend: the domain is paused where it is.
    assert gahp.call("CONDOR_VM_SOFT_SUSPEND", "1", timeout=60)[0], gahp.stderr_tail()
    assert domain_state(libvirt_uri, domain_name(cluster)) == 3  # VIR_DOMAIN_PAUSED
    frozen = _suspended_without_ticks(gahp, disk, "soft-suspended")
    assert gahp.call("CONDOR_VM_RESUME", "1", timeout=60)[0], gahp.stderr_tail()
    assert status(gahp).startswith("STATUS=Running")
    seen = wait_for_ticks(disk, len(frozen) + 1)

    # Hard suspend: the memory goes to xen.mem.ckpt in the working dir, the domain ends.
    assert gahp.call("CONDOR_VM_SUSPEND", "1", timeout=120)[0], gahp.stderr_tail()
    save = scratch / "xen.mem.ckpt"
    assert save.is_file() and save.stat().st_size > 0
    assert domain_state(libvirt_uri, domain_name(cluster)) is None
    frozen = _suspended_without_ticks(gahp, disk, "hard-suspended")
    assert len(frozen) >= len(seen)
    assert gahp.call("CONDOR_VM_RESUME", "1", timeout=120)[0], gahp.stderr_tail()
    assert status(gahp).startswith("STATUS=Running")

    wait_for_status(gahp, "Stopped")
    quit_gahp(gahp)
    assert_finished_in_one_run(disk, SUSPEND_TICKS)
