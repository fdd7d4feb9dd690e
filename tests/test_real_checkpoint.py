"""A real guest checkpointed mid-run and restarted by a fresh daemon elsewhere.

The tiny guest counts one-second ticks into ``progress.txt`` on its boot disk
(running on a snapshot overlay). It is checkpointed mid-count, stopped, its
files copied to a fresh directory as HTCondor's file transfer would, and a new
daemon restores it there: the count carries on from where it was (no second
"boot" line, no tick lost or repeated), the MAC survives, and the base image
is never written.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from gahp_process import GahpProcess, job_ad
from guest_fixture import read_guest_file, wait_for_console

pytestmark = pytest.mark.libvirtd

MAC = "52:54:00:ab:cd:ef"
TICKS = 25
TICKS_BEFORE_CHECKPOINT = 5  # the guest's console says "tick 5/25" first
NAME = "ckpt_vmgahp.test_43.0"
CHECKPOINT_FILES = ("xen.mem.ckpt", "xen.mem.ckpt.timestamp", "vmgahp-checkpoint.json", "vmgahp-overlay-vda.qcow2")
KNOBS = dict(VM_KVM_DOMAIN_TYPE="qemu", VM_NETWORKING="true", VM_NETWORKING_TYPE="user", VM_GAHP_SHUTDOWN_TIMEOUT="5")


def _scratch() -> Path:
    path = Path(tempfile.mkdtemp(prefix="vmgahp-realckpt-"))
    os.chmod(path, 0o755)
    return path


def _ticks(progress: str | None) -> list[int]:
    return [int(n) for n in re.findall(r"^tick (\d+)$", progress or "", re.M)]


def _ad(work: Path, **extra: str) -> list[str]:
    return job_ad(
        work, disk="boot.img:vda:w:raw", ClusterId="43", User='"ckpt@vmgahp.test"', JobVMMemory="256", JobVMCheckpoint="true",
        VMPARAM_vm_Snapshot_Disk="true", JobVMNetworking="true", JobVMNetworkingType='"user"',
        JobVM_MACADDR=f'"{MAC}"', **extra,
    )


def _domain_xml(uri: str) -> str:
    import libvirt

    conn = libvirt.open(uri)
    try:
        return conn.lookupByName(NAME).XMLDesc(0)
    finally:
        conn.close()


def _wait_for_stopped(gahp: GahpProcess, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ok, text = gahp.call("CONDOR_VM_STATUS", "1")
        assert ok, text
        if text == "STATUS=Stopped":
            return
        time.sleep(1.0)
    raise AssertionError(f"the guest did not power off within {timeout} s")


def test_checkpoint_restarts_on_another_directory_and_continues(tiny_guest, libvirt_uri: str) -> None:
    """Ticks counted before the checkpoint are kept and counting resumes after restore."""
    first, second = _scratch(), _scratch()
    gahps: list[GahpProcess] = []
    try:
        base = tiny_guest.boot_disk(first / "boot.img", ticks=TICKS)
        base_sha = hashlib.sha256(base.read_bytes()).hexdigest()
        gahp = GahpProcess(first, VM_KVM_LIBVIRT_URI=libvirt_uri, **KNOBS)
        gahps.append(gahp)
        gahp.handshake()
        gahp.send_ad(_ad(first))
        assert gahp.call("CONDOR_VM_START", "kvm") == (True, "1")
        assert MAC in _domain_xml(libvirt_uri)
        overlay = first / "vmgahp-overlay-vda.qcow2"
        # The overlay is read only once the VM is saved: while QEMU runs it,
        # freshly allocated qcow2 clusters may not be visible from outside.
        wait_for_console(libvirt_uri, NAME, f"tick {TICKS_BEFORE_CHECKPOINT}/{TICKS}")

        assert gahp.call("CONDOR_VM_CHECKPOINT", "1") == (True, "NULL")
        assert gahp.call("CONDOR_VM_STATUS", "1") == (True, "STATUS=Suspended")
        before = _ticks(read_guest_file(overlay, "progress.txt"))
        assert gahp.call("CONDOR_VM_STOP", "1") == (True, "NULL")
        assert gahp.reply("QUIT") == "S"
        assert gahp.wait() == 0
        assert TICKS_BEFORE_CHECKPOINT <= len(before) < TICKS and before == list(range(1, len(before) + 1)), before

        # The intermediate files travel; the base image is transferred afresh.
        for name in CHECKPOINT_FILES:
            shutil.copy2(first / name, second / name)
            os.chown(second / name, 1000, 1000)
        tiny_guest.boot_disk(second / "boot.img", ticks=TICKS)
        restart = GahpProcess(second, VM_KVM_LIBVIRT_URI=libvirt_uri, **KNOBS)
        gahps.append(restart)
        restart.handshake()
        restart.send_ad(_ad(second, TransferIntermediate='"' + ",".join(CHECKPOINT_FILES) + '"'))
        assert restart.call("CONDOR_VM_START", "kvm") == (True, "1")
        assert '"domain_restored"' in (second / "vmgahp.log").read_text()
        assert MAC in _domain_xml(libvirt_uri)  # the NIC keeps its address
        _wait_for_stopped(restart, timeout=120)
        assert restart.reply("QUIT") == "S"

        progress = read_guest_file(second / "vmgahp-overlay-vda.qcow2", "progress.txt")
        assert _ticks(progress) == list(range(1, TICKS + 1)), progress
        assert progress.count("boot ") == 1, f"the guest was cold-booted again:\n{progress}"
        result = read_guest_file(second / "vmgahp-overlay-vda.qcow2", "result.txt")
        assert result and "TINY-GUEST DONE rc=0" in result
        # The base image was never written, here or there.
        assert hashlib.sha256(base.read_bytes()).hexdigest() == base_sha
        assert (first / "boot.img").exists() and (second / "boot.img").exists()
    finally:
        for gahp in gahps:
            gahp.kill()
        if not os.environ.get("VMGAHP_KEEP_TEST_DIRS"):
            shutil.rmtree(first, ignore_errors=True)
            shutil.rmtree(second, ignore_errors=True)
