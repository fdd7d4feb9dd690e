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
from helpers import TESTS
from vmgahp.drivers.libvirt import overlays

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
    from vmgahp.job.model import Disk, VmJob

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


def test_overlays_name_their_base_relatively_and_move_unchanged(dirs: list[Path]) -> None:
    """An overlay of a transferred base names it by its bare file name: copied with
    its base into another scratch directory it works there as it is - nothing is
    rebased, the file that came back is never rewritten."""
    from vmgahp.job.model import Disk, VmJob

    first, second = dirs
    disk = Disk(path=str(_base_disk(first)), device="vda", permission="w", format="raw", transferred=True)
    job = VmJob(vm_type="kvm", name="t_1.0", working_dir=str(first), memory_mib=64, snapshot_disk=True,
                disks=(disk,))
    overlay = Path(overlays.prepare(job).disks[0].path)
    assert overlays.backing_file(str(overlay)) == "disk.img"
    shutil.copy(first / "disk.img", second / "disk.img")
    shutil.copy(overlay, second / overlay.name)
    came_back = _sha256(second / overlay.name)
    assert overlays.chain(str(second / overlay.name)) == [str(second / overlay.name), str(second / "disk.img")]
    # A restart layers over it; the layer that came back is untouched.
    moved = job.model_copy(update={
        "working_dir": str(second),
        "disks": (disk.model_copy(update={"path": str(second / "disk.img")}),),
    })
    top = Path(overlays.prepare(moved, tops={"vda": str(second / overlay.name)}).disks[0].path)
    assert top.name == "vmgahp-overlay-vda.2.qcow2"
    assert overlays.backing_file(str(top)) == overlay.name
    assert _sha256(second / overlay.name) == came_back


def test_commit_down_leaves_one_overlay_of_the_base(dirs: list[Path]) -> None:
    """When the guest ends, the layers fold into the first overlay: one output file."""
    from vmgahp.job.model import Disk, VmJob

    work = dirs[0]
    disk = Disk(path=str(_base_disk(work)), device="vda", permission="w", format="raw", transferred=True)
    job = VmJob(vm_type="kvm", name="t_1.0", working_dir=str(work), memory_mib=64, snapshot_disk=True, disks=(disk,))
    first = overlays.prepare(job)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64k", first.disks[0].path], check=True,
                   capture_output=True)
    second = overlays.prepare(job)  # as a restart with no usable memory state would
    top = second.disks[0].path
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1M 64k", top], check=True, capture_output=True)
    overlays.commit_down(second)
    assert sorted(p.name for p in work.glob("vmgahp-overlay-*")) == ["vmgahp-overlay-vda.qcow2"]
    gen1 = str(work / "vmgahp-overlay-vda.qcow2")
    for offset, pattern in (("0", "0x11"), ("1M", "0x22")):
        done = subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"read -P {pattern} {offset} 64k", gen1],
                              check=True, capture_output=True, text=True)
        assert "Pattern verification failed" not in done.stdout


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
    assert manifest["files"]["xen.mem.ckpt"]["size"] == (first / "xen.mem.ckpt").stat().st_size
    assert gahp.call("CONDOR_VM_STOP", "1") == (True, "NULL")
    assert gahp.reply("QUIT") == "S"
    assert _sha256(base) == before

    # The shadow spools the checkpoint; the next run gets it in its scratch dir.
    for name in (*CHECKPOINT_FILES, "disk.img"):
        shutil.copy2(first / name, second / name)
        os.chown(second / name, 1000, 1000)
    restart = GahpProcess(second)
    gahps.append(restart)
    restart.handshake()
    restart.send_ad(job_ad(second, JobVMCheckpoint="true", VMPARAM_vm_Snapshot_Disk="true"))
    assert restart.call("CONDOR_VM_START", "kvm") == (True, "1")
    assert restart.call("CONDOR_VM_STATUS", "1")[1].startswith("STATUS=Running")
    log = (second / "vmgahp.log").read_text()
    assert '"domain_restored"' in log and '"domain_started"' not in log
    # Every file that came back is as it came; the guest writes to a new layer.
    for name in CHECKPOINT_FILES:
        assert _sha256(second / name) == _sha256(first / name), name
    assert overlays.backing_file(str(second / "vmgahp-overlay-vda.2.qcow2")) == "vmgahp-overlay-vda.qcow2"
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
    gahp.send_ad(job_ad(work))
    assert gahp.call("CONDOR_VM_START", "kvm") == (False, "VMGAHP_ERR_BAD_IMAGE")
    assert "checkpoint memory file" in (work / "vmgahp.log").read_text()
    assert (work / "disk.img").exists()  # the input disk is never deleted
    assert gahp.reply("QUIT") == "S"


# ------------------------------------------------------------ nothing lost (issue 8)
def _checkpointed(first: Path, gahps: list, **extra: str) -> None:
    """Run 1 in ``first``: start, checkpoint, stop (a vacate), no TransferIntermediate."""
    _base_disk(first)
    gahp = GahpProcess(first)
    gahps.append(gahp)
    gahp.handshake()
    gahp.send_ad(job_ad(first, JobVMCheckpoint="true", VMPARAM_vm_Snapshot_Disk="true", **extra))
    assert gahp.call("CONDOR_VM_START", "kvm") == (True, "1")
    assert gahp.call("CONDOR_VM_CHECKPOINT", "1") == (True, "NULL")
    assert gahp.call("CONDOR_VM_STOP", "1") == (True, "NULL")
    assert gahp.reply("QUIT") == "S"


def _restart(second: Path, gahps: list, **extra: str) -> tuple[GahpProcess, tuple[bool, str]]:
    gahp = GahpProcess(second)
    gahps.append(gahp)
    gahp.handshake()
    gahp.send_ad(job_ad(second, JobVMCheckpoint="true", VMPARAM_vm_Snapshot_Disk="true", **extra))
    return gahp, gahp.call("CONDOR_VM_START", "kvm")


def _came_back(first: Path, second: Path) -> dict[str, str]:
    for name in (*CHECKPOINT_FILES, "disk.img"):
        shutil.copy2(first / name, second / name)
        os.chown(second / name, 1000, 1000)
    return {name: _sha256(second / name) for name in (*CHECKPOINT_FILES, "disk.img")}


def test_restart_is_recognised_without_transfer_intermediate(dirs: list[Path], gahps: list) -> None:
    """HTCondor 25's starter sends no TransferIntermediate: the manifest in the
    working directory, checked against this job, is enough."""
    first, second = dirs
    _checkpointed(first, gahps)
    came_back = _came_back(first, second)
    gahp, result = _restart(second, gahps)
    assert result == (True, "1")
    log = (second / "vmgahp.log").read_text()
    assert '"checkpoint_found"' in log and '"domain_restored"' in log and '"domain_started"' not in log
    assert {name: _sha256(second / name) for name in came_back} == came_back


def test_a_manifest_of_another_job_is_ignored_and_its_files_kept(dirs: list[Path], gahps: list) -> None:
    """Another job's checkpoint in the working dir: ignored (and logged), the VM
    boots afresh on a new overlay layer, and the other job's files stay as they are."""
    first, second = dirs
    _checkpointed(first, gahps)
    came_back = _came_back(first, second)
    gahp, result = _restart(second, gahps, ClusterId="4343")  # another job: another VM name
    assert result == (True, "1")
    log = (second / "vmgahp.log").read_text()
    assert '"checkpoint_ignored"' in log and "alice_example.org_42.0" in log
    assert '"domain_started"' in log and '"domain_restored"' not in log
    assert {name: _sha256(second / name) for name in came_back} == came_back
    assert (second / "vmgahp-overlay-vda.2.qcow2").exists()
    assert overlays.backing_file(str(second / "vmgahp-overlay-vda.2.qcow2")) == "disk.img"  # not the other's layer


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("truncate-memory", "truncated or replaced"),
        ("corrupt-memory", "does not match its SHA-256"),
        ("drop-overlay", "vmgahp-overlay-vda.qcow2 is missing"),
        ("corrupt-manifest", "corrupt checkpoint manifest"),
    ],
)
def test_a_damaged_checkpoint_is_a_token_and_nothing_changes(dirs: list[Path], gahps: list, damage: str,
                                                               why: str) -> None:
    """This job's checkpoint, damaged on the way: BAD_IMAGE with the reason in the
    log, no cold boot, and every file that came back left exactly as it came."""
    first, second = dirs
    _checkpointed(first, gahps)
    _came_back(first, second)
    memory = second / "xen.mem.ckpt"
    if damage == "truncate-memory":
        with open(memory, "r+b") as handle:
            handle.truncate(memory.stat().st_size // 2)
    elif damage == "corrupt-memory":
        data = bytearray(memory.read_bytes())
        data[len(data) // 2] ^= 0xFF
        memory.write_bytes(bytes(data))
    elif damage == "drop-overlay":
        (second / "vmgahp-overlay-vda.qcow2").unlink()
    else:
        (second / "vmgahp-checkpoint.json").write_text("{ not json")
    before = {p.name: _sha256(p) for p in second.iterdir()}
    gahp, result = _restart(second, gahps)
    assert result == (False, "VMGAHP_ERR_BAD_IMAGE")
    log = (second / "vmgahp.log").read_text()
    assert why in log and '"domain_started"' not in log
    after = {p.name: _sha256(p) for p in second.iterdir() if p.name != "vmgahp.log"}
    assert after == {name: digest for name, digest in before.items() if name != "vmgahp.log"}
    assert gahp.reply("QUIT") == "S"


def test_the_manifest_records_what_the_domain_really_uses(dirs: list[Path], gahps: list) -> None:
    """An XML script that bypasses the overlay makes the domain write into the base
    image: the manifest must say so (read back from libvirt), not claim the overlay."""
    import json

    work = dirs[0]
    script = TESTS / "xml_scripts" / "simple_libvirt_xml.py"
    gahp = GahpProcess(work, LIBVIRT_XML_SCRIPT=str(script),
                       LIBVIRT_XML_SCRIPT_ARGS=f"/dev/null --ignore-disk-list {work}/disk.img")
    gahps.append(gahp)
    _base_disk(work)
    gahp.handshake()
    gahp.send_ad(job_ad(work, JobVMCheckpoint="true", VMPARAM_vm_Snapshot_Disk="true"))
    assert gahp.call("CONDOR_VM_START", "kvm") == (True, "1")
    assert gahp.call("CONDOR_VM_CHECKPOINT", "1") == (True, "NULL")
    manifest = json.loads((work / "vmgahp-checkpoint.json").read_text())
    vda = next(d for d in manifest["driver"]["disks"] if d["device"] == "vda")  # the libvirt driver's record
    assert (vda["role"], vda["file"]) == ("file", "disk.img")
    assert "disk.img" in manifest["files"]
    assert gahp.reply("QUIT") == "S"
