"""Snapshot overlays and checkpoint -> restart in another directory.

The plumbing runs on libvirt's test hypervisor (whose save files are domain
XML): two daemon processes, two working directories, the checkpoint files
copied between them as HTCondor's file transfer would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from gahp_process import GahpProcess, job_ad
from vmgahp import overlays

CHECKPOINT_FILES = ("xen.mem.ckpt", "xen.mem.ckpt.timestamp", "vmgahp-checkpoint.json", "vmgahp-overlay-vda.qcow2")


def _scratch() -> Path:
    path = Path(tempfile.mkdtemp(prefix="vmgahp-ckpt-"))
    os.chmod(path, 0o755)
    return path


def _base_disk(work: Path, size: int = 4 << 20) -> Path:
    disk = work / "disk.img"
    with open(disk, "wb") as handle:
        handle.write(os.urandom(64 << 10))
        handle.truncate(size)
    os.chown(disk, 1000, 1000)
    return disk


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def dirs():
    made = [_scratch(), _scratch()]
    yield made
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def gahps():
    started: list[GahpProcess] = []
    yield started
    for gahp in started:
        gahp.kill()


def test_overlay_takes_the_writes_and_the_base_stays_untouched(dirs: list[Path]) -> None:
    """Writes land in the qcow2 overlay; the base image's bytes do not change."""
    from vmgahp.job import Disk, VmJob

    work = dirs[0]
    base = _base_disk(work)
    before = _sha256(base)
    job = VmJob(
        vm_type="kvm", name="t_1.0", working_dir=str(work), memory_mib=64, snapshot_disk=True,
        disks=(Disk(path=str(base), device="vda", permission="w", format="raw", transferred=True),),
    )
    prepared = overlays.prepare(job)
    overlay = Path(prepared.disks[0].path)
    assert overlay.name == "vmgahp-overlay-vda.qcow2" and prepared.disks[0].format == "qcow2"
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 256k", str(overlay)], check=True,
                   capture_output=True)
    read_back = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0xab 1M 256k", str(overlay)],
                               check=True, capture_output=True, text=True)
    assert "Pattern verification failed" not in read_back.stdout
    assert _sha256(base) == before
    # What goes back to the submit side is the overlay, not the whole image.
    assert overlay.stat().st_size < base.stat().st_size


def test_overlay_is_rebased_when_the_base_moves(dirs: list[Path]) -> None:
    """A carried-over overlay points at the base image's new path after a restart."""
    from vmgahp.job import Disk, VmJob

    first, second = dirs
    disk = Disk(path=str(_base_disk(first)), device="vda", permission="w", format="raw", transferred=True)
    job = VmJob(vm_type="kvm", name="t_1.0", working_dir=str(first), memory_mib=64, snapshot_disk=True,
                disks=(disk,))
    overlay = Path(overlays.prepare(job).disks[0].path)
    shutil.copy(first / "disk.img", second / "disk.img")
    shutil.copy(overlay, second / overlay.name)
    moved = job.model_copy(update={
        "working_dir": str(second),
        "disks": (disk.model_copy(update={"path": str(second / "disk.img")}),),
    })
    overlays.prepare(moved, reuse=True)
    assert overlays.backing_file(str(second / overlay.name)) == str(second / "disk.img")


def test_a_refused_restore_puts_the_overlay_back_as_it_came(dirs: list[Path]) -> None:
    """The rebase onto the new base path is undone byte for byte (the restore failed)."""
    from vmgahp.job import Disk, VmJob

    first, second = dirs
    disk = Disk(path=str(_base_disk(first)), device="vda", permission="w", format="raw", transferred=True)
    job = VmJob(vm_type="kvm", name="t_1.0", working_dir=str(first), memory_mib=64, snapshot_disk=True,
                disks=(disk,))
    overlay = Path(overlays.prepare(job).disks[0].path)
    shutil.copy(first / "disk.img", second / "disk.img")
    shutil.copy(overlay, second / overlay.name)
    came = _sha256(second / overlay.name)
    moved = job.model_copy(update={
        "working_dir": str(second),
        "disks": (disk.model_copy(update={"path": str(second / "disk.img")}),),
    })
    carried = overlays.carried_backings(moved)
    assert carried == {second / overlay.name: (str(first / "disk.img"), "raw")}
    overlays.prepare(moved, reuse=True)
    assert _sha256(second / overlay.name) != came  # rebased
    overlays.put_back(carried)
    assert _sha256(second / overlay.name) == came


def test_checkpoint_restarts_in_a_fresh_directory(dirs: list[Path], gahps: list) -> None:
    """A fresh daemon given the checkpoint files restores the VM instead of booting it."""
    first, second = dirs
    base = _base_disk(first)
    before = _sha256(base)
    ad = job_ad(first, JobVMCheckpoint="true", VMPARAM_vm_Snapshot_Disk="true",
                JobVM_MACADDR='"52:54:00:12:34:56"')
    gahp = GahpProcess(first)
    gahps.append(gahp)
    gahp.handshake()
    gahp.send_ad(ad)
    assert gahp.call("CONDOR_VM_START", "kvm") == (True, "1")
    assert gahp.call("CONDOR_VM_CHECKPOINT", "1") == (True, "NULL")
    assert gahp.call("CONDOR_VM_STATUS", "1") == (True, "STATUS=Suspended")
    for name in CHECKPOINT_FILES:
        assert (first / name).exists(), name
    manifest = json.loads((first / "vmgahp-checkpoint.json").read_text())
    assert manifest["memory"]["size"] == (first / "xen.mem.ckpt").stat().st_size
    assert gahp.call("CONDOR_VM_STOP", "1") == (True, "NULL")
    assert gahp.reply("QUIT") == "S"
    assert _sha256(base) == before

    # The shadow spools the checkpoint; the next run gets it as TransferIntermediate.
    for name in (*CHECKPOINT_FILES, "disk.img"):
        shutil.copy2(first / name, second / name)
        os.chown(second / name, 1000, 1000)
    restart = GahpProcess(second)
    gahps.append(restart)
    restart.handshake()
    restart.send_ad(job_ad(second, JobVMCheckpoint="true", VMPARAM_vm_Snapshot_Disk="true",
                           TransferIntermediate='"' + ",".join(CHECKPOINT_FILES) + '"'))
    assert restart.call("CONDOR_VM_START", "kvm") == (True, "1")
    assert restart.call("CONDOR_VM_STATUS", "1")[1].startswith("STATUS=Running")
    log = (second / "vmgahp.log").read_text()
    assert '"domain_restored"' in log and '"domain_started"' not in log
    # The memory state was consumed; the overlay now backs onto the new base.
    assert not (second / "xen.mem.ckpt").exists()
    assert overlays.backing_file(str(second / "vmgahp-overlay-vda.qcow2")) == str(second / "disk.img")
    assert restart.reply("QUIT") == "S"


def test_corrupt_checkpoint_holds_the_job_with_bad_image(dirs: list[Path], gahps: list) -> None:
    """A truncated memory file is refused with BAD_IMAGE, not cold-booted."""
    work = dirs[0]
    _base_disk(work)
    (work / "xen.mem.ckpt").write_bytes(b"garbage")
    manifest = {"format": 1, "vm_name": "alice_example.org_42.0", "memory": {"file": "xen.mem.ckpt", "size": 999},
                "domain_xml": "", "disks": [], "snapshot_disk": False}
    (work / "vmgahp-checkpoint.json").write_text(json.dumps(manifest))
    gahp = GahpProcess(work)
    gahps.append(gahp)
    gahp.handshake()
    gahp.send_ad(job_ad(work, TransferIntermediate='"xen.mem.ckpt,vmgahp-checkpoint.json"'))
    assert gahp.call("CONDOR_VM_START", "kvm") == (False, "VMGAHP_ERR_BAD_IMAGE")
    assert "checkpoint memory file" in (work / "vmgahp.log").read_text()
    assert (work / "disk.img").exists()  # the input disk is never deleted
    assert gahp.reply("QUIT") == "S"
