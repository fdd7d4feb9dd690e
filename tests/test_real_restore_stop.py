"""CONDOR_VM_STOP of a restored real guest: the ACPI power-off must reach it.

QEMU drops a power-button press while the guest has not enabled the button
(PM1_EN.PWRBTN_EN clear: firmware, boot loader, early kernel), and a press
between the kernel's button driver and the guest's handler (acpid) goes to
nobody. A guest restored from a save made during its boot resumes that boot,
so the STOP that follows the RESUME lands in that window; vmgahp pressed the
button once and waited out its whole grace. It now presses again during the
grace, and the guest powers itself off once its handler runs.

* hard suspend while booting, RESUME, STOP: powered off by ACPI, not destroyed;
* checkpoint of a ticking guest, restart from it in a new gahp and directory,
  STOP: powered off by ACPI at once.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from gahp_process import GahpProcess
from gahp_process import job_ad as plain_job_ad
from guest_fixture import TinyGuest, read_guest_file, wait_for_console
from test_real_guest import (  # noqa: F401 - fixtures
    CLUSTER_BASE,
    JOB_GID,
    JOB_UID,
    domain_name,
    domain_state,
    domains,
    gahps,
    progress,
    scratch,
    start_guest,
    ticks,
    wait_for_ticks,
)

pytestmark = pytest.mark.libvirtd

GRACE = 60  # VM_GAHP_SHUTDOWN_TIMEOUT: long enough for a loaded host to finish the guest's boot
STOP_BOUND = 40.0  # well before the grace: the repeated press, not the destroy, ended it


def log_events(work: Path) -> list[str]:
    names = []
    for line in (work / "vmgahp.log").read_text(errors="replace").splitlines():
        try:
            names.append(json.loads(line)["event"])
        except (ValueError, KeyError, TypeError):
            continue
    return names


def assert_powered_off_by_acpi(work: Path, elapsed: float, bound: float) -> None:
    events = log_events(work)
    assert "shutdown_grace_expired" not in events, f"the guest ignored the power button ({elapsed:.1f} s)"
    assert "domain_powered_off" in events, events
    assert elapsed < bound, f"STOP took {elapsed:.1f} s"


def test_stop_after_restore_of_a_guest_saved_while_booting(
    tiny_guest: TinyGuest, scratch: Path, libvirt_uri: str, gahps: list, domains: list  # noqa: F811 - test_real_guest's fixtures
) -> None:
    disk = tiny_guest.boot_disk(scratch / "tiny.img", ticks=120, owner=(JOB_UID, JOB_GID))
    cluster = CLUSTER_BASE + 7
    gahp = start_guest(scratch, libvirt_uri, "tiny.img:vda:w:raw", cluster, gahps, domains,
                       VM_GAHP_SHUTDOWN_TIMEOUT=str(GRACE))
    # At once: the guest is still in its firmware or boot loader.
    assert gahp.call("CONDOR_VM_SUSPEND", "1", timeout=120)[0], gahp.stderr_tail()
    assert progress(disk) == [], "the guest had booted before it was saved: the test needs it saved while booting"
    assert gahp.call("CONDOR_VM_RESUME", "1", timeout=120)[0], gahp.stderr_tail()
    began = time.monotonic()
    assert gahp.call("CONDOR_VM_STOP", "1", timeout=GRACE + 60) == (True, "NULL")
    elapsed = time.monotonic() - began
    assert domain_state(libvirt_uri, domain_name(cluster)) is None
    assert_powered_off_by_acpi(scratch, elapsed, STOP_BOUND)
    assert gahp.reply("QUIT") == "S"
    assert gahp.wait(timeout=60) == 0
    # Pressed before /init mounted its output disk, the guest powers off with
    # nothing on it; after, it says so last.
    lines = progress(disk)
    assert lines == [] or (lines[0] == "boot 1 after tick 0" and lines[-1] == "power button"), lines
    assert read_guest_file(disk, "result.txt") is None  # stopped, not done


CHECKPOINT_FILES = ("xen.mem.ckpt", "xen.mem.ckpt.timestamp", "vmgahp-checkpoint.json", "vmgahp-overlay-vda.qcow2")


@pytest.fixture
def second_scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vmgahp-restart-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_stop_after_restart_from_a_checkpoint(
    tiny_guest: TinyGuest, scratch: Path, second_scratch: Path, libvirt_uri: str, gahps: list, domains: list  # noqa: F811 - test_real_guest's fixtures
) -> None:
    cluster = CLUSTER_BASE + 8
    name = f"ckpt_vmgahp.test_{cluster}.0"
    domains.append(name)
    knobs = dict(VM_KVM_LIBVIRT_URI=libvirt_uri, VM_KVM_DOMAIN_TYPE="qemu", VM_GAHP_SHUTDOWN_TIMEOUT=str(GRACE))

    def ad(work: Path, **extra: str) -> list[str]:
        return plain_job_ad(work, disk="boot.img:vda:w:raw", ClusterId=str(cluster), User='"ckpt@vmgahp.test"',
                            JobVMMemory="256", JobVMCheckpoint="true", VMPARAM_vm_Snapshot_Disk="true", **extra)

    tiny_guest.boot_disk(scratch / "boot.img", ticks=120)
    gahp = GahpProcess(scratch, **knobs)
    gahps.append(gahp)
    gahp.handshake()
    gahp.send_ad(ad(scratch))
    assert gahp.call("CONDOR_VM_START", "kvm", timeout=120) == (True, "1"), gahp.stderr_tail()
    # The overlay is read only while the VM is saved (clusters QEMU has not flushed are invisible).
    overlay = scratch / "vmgahp-overlay-vda.qcow2"
    wait_for_console(libvirt_uri, name, "tick 2/120", timeout=180)
    assert gahp.call("CONDOR_VM_CHECKPOINT", "1", timeout=120) == (True, "NULL"), gahp.stderr_tail()
    before = ticks(overlay)
    assert before, "the guest never ticked"
    assert gahp.call("CONDOR_VM_STOP", "1") == (True, "NULL")
    assert gahp.reply("QUIT") == "S"
    assert gahp.wait(timeout=60) == 0

    for file in CHECKPOINT_FILES:
        shutil.copy2(scratch / file, second_scratch / file)
        os.chown(second_scratch / file, JOB_UID, JOB_GID)
    tiny_guest.boot_disk(second_scratch / "boot.img", ticks=120)
    restart = GahpProcess(second_scratch, **knobs)
    gahps.append(restart)
    restart.handshake()
    restart.send_ad(ad(second_scratch))  # no TransferIntermediate: the starter never sends it
    assert restart.call("CONDOR_VM_START", "kvm", timeout=120) == (True, "1"), restart.stderr_tail()
    assert "domain_restored" in log_events(second_scratch)
    began = time.monotonic()
    assert restart.call("CONDOR_VM_STOP", "1", timeout=GRACE + 60) == (True, "NULL")
    elapsed = time.monotonic() - began
    assert domain_state(libvirt_uri, name) is None
    # The guest was up when it was saved: the first press reaches it.
    assert_powered_off_by_acpi(second_scratch, elapsed, 15.0)
    assert restart.reply("QUIT") == "S"
    assert restart.wait(timeout=60) == 0
    # The restored guest wrote to a new layer over the checkpoint's overlay.
    top = second_scratch / "vmgahp-overlay-vda.2.qcow2"
    lines = (read_guest_file(top, "progress.txt") or "").splitlines()
    assert lines.count("boot 1 after tick 0") == 1 and not any(line.startswith("boot 2") for line in lines), lines
    assert lines[-1:] == ["power button"], lines
