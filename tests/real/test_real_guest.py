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

import time
from pathlib import Path
from typing import Callable

import pytest

import transcript_runner as tr
from gahp_process import GahpProcess
from guest_fixture import TinyGuest, read_guest_file
from real_guest import (  # helpers shared by the real-guest tests (fixtures: real/conftest.py)
    BOOT_TIMEOUT,
    CLUSTER_BASE,
    JOB_GID,
    JOB_UID,
    TRANSCRIPT_06,
    TRANSCRIPT_06_CLUSTER,
    TRANSCRIPT_06_DISK,
    TRANSCRIPT_06_DOMAIN,
    assert_finished_in_one_run,
    domain_name,
    domain_state,
    progress,
    quit_gahp,
    start_guest,
    status,
    ticks,
    wait_for_status,
    wait_for_ticks,
)

pytestmark = pytest.mark.libvirtd


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
        substitutions={"ClusterId = 42": f"ClusterId = {TRANSCRIPT_06_CLUSTER}", **tr.support_vms_substitutions()},
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
