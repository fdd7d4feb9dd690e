"""Real guests under a **stock** libvirt: Debian's own qemu.conf, QEMU as libvirt-qemu.

Every other real-guest test runs against the test rig's libvirtd (the
``# vmgahp test settings`` block of scripts/setup.sh: QEMU as root, no
relabelling). These run against a private libvirtd (tests/private_libvirtd.py,
``stock_libvirtd``) whose /etc/libvirt holds only the qemu.conf the Debian
package ships - every setting at libvirt's default: QEMU as
``libvirt-qemu:libvirt-qemu``, ``dynamic_ownership = 1``, the DAC security
driver, console logs through virtlogd - exactly what an execute node with a
packaged libvirt has. The job is what condor_starter hands the gahp: a scratch
directory owned by the job user (uid 1000), mode 0755, the job's disks in it
owned by that user, and the gahp as root with ``VMGAHP_USER_UID=1000``.

* a guest on snapshot disks (a qcow2 base and a raw ext4 output disk) runs its
  job from the CD-ROM vmgahp builds, powers itself off and keeps its output;
  while it runs QEMU is libvirt-qemu and libvirt has chowned every image to it;
  afterwards every file of the scratch dir is the job user's again;
* hard suspend (libvirt writes ``xen.mem.ckpt``), resume, checkpoint, and a
  restart from the checkpoint in a new scratch directory: the guest goes on
  from where it was (one boot, every tick once) and its output is one overlay,
  the job user's;
* a job's qcow2 whose header names a host file as its backing file is refused
  (``VMGAHP_ERR_BAD_IMAGE``), and that file keeps its owner - a stock libvirt
  would chown it to libvirt-qemu and give it to the guest.

About 60-90 s on 2 cores (two boots of the tiny guest under TCG, one restore).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from gahp_process import GahpProcess
from guest_fixture import TinyGuest, read_guest_file, wait_for_console
from private_libvirtd import PrivateLibvirtd
from test_real_guest import assert_finished_in_one_run, job_ad, quit_gahp, status, wait_for_status

pytestmark = pytest.mark.libvirtd

JOB_UID = JOB_GID = 1000
BOOT_TIMEOUT = 120.0
CHECKPOINT_FILES = ("xen.mem.ckpt", "xen.mem.ckpt.timestamp", "vmgahp-checkpoint.json",
                    "vmgahp-overlay-vda.qcow2", "vmgahp-cdrom.iso")
JOB_SH = """#!/bin/sh
# Runs inside the guest: add up the numbers of the input, one per line.
sum=0
while read -r n; do sum=$((sum + n)); done < "$CDROM/numbers.txt"
echo "sum=$sum" > "$OUT/answer.txt"
"""


# ------------------------------------------------------------------ fixtures
@pytest.fixture
def stock(stock_libvirtd: PrivateLibvirtd) -> Iterator[PrivateLibvirtd]:
    """The stock libvirtd, running; leftover domains destroyed after the test."""
    stock_libvirtd.ensure_running()
    yield stock_libvirtd
    stock_libvirtd.destroy_all()


def _scratch() -> Path:
    """A scratch dir as the starter makes it for a VM job: the job user's, 0755."""
    path = Path(tempfile.mkdtemp(prefix="vmgahp-stock-", dir="/tmp"))
    os.chown(path, JOB_UID, JOB_GID)
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def scratches() -> Iterator[list[Path]]:
    made = [_scratch(), _scratch()]
    yield made
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def gahps() -> Iterator[list[GahpProcess]]:
    started: list[GahpProcess] = []
    yield started
    for gahp in started:
        gahp.kill()


# ------------------------------------------------------------------- helpers
def qemu_user() -> tuple[int, int]:
    entry = pwd.getpwnam("libvirt-qemu")
    return entry.pw_uid, entry.pw_gid


def owners(directory: Path) -> dict[str, tuple[int, int]]:
    """Owner of every file of the scratch dir but the gahp's own log."""
    return {p.name: (p.stat().st_uid, p.stat().st_gid) for p in directory.iterdir()
            if p.is_file() and p.name != "vmgahp.log"}


def give(path: Path, text: str | None = None) -> Path:
    """A file the job brought (transferred input): the job user's."""
    if text is not None:
        path.write_text(text)
    os.chown(path, JOB_UID, JOB_GID)
    return path


def qemu_process_uid(daemon: PrivateLibvirtd, name: str) -> int:
    """The real uid of the domain's QEMU process (libvirt keeps its pid)."""
    pid = int(daemon.path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for QEMU pid {pid}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start(work: Path, daemon: PrivateLibvirtd, gahps: list, ad: list[str]) -> GahpProcess:
    gahp = GahpProcess(work, VM_KVM_LIBVIRT_URI=daemon.uri, VM_KVM_DOMAIN_TYPE="qemu",
                       VMGAHP_USER_UID=str(JOB_UID), VMGAHP_USER_GID=str(JOB_GID))
    gahps.append(gahp)
    gahp.handshake()
    gahp.send_ad(ad)
    assert gahp.call("CONDOR_VM_START", "kvm", timeout=120) == (True, "1"), gahp.stderr_tail()
    return gahp


def ticks(image: Path) -> list[int]:
    lines = (read_guest_file(image, "progress.txt") or "").splitlines()
    return [int(line.split()[1]) for line in lines if line.startswith("tick ")]


# --------------------------------------------------------------------- tests
def test_guest_on_snapshot_disks_runs_its_cdrom_job_and_keeps_its_output(
    tiny_guest: TinyGuest, stock: PrivateLibvirtd, scratches: list[Path], gahps: list
) -> None:
    work = scratches[0]
    tiny_guest.boot_disk(work / "tiny.qcow2", fmt="qcow2", owner=(JOB_UID, JOB_GID))
    tiny_guest.data_disk(work / "data.img", owner=(JOB_UID, JOB_GID))
    give(work / "job.sh", JOB_SH)
    give(work / "numbers.txt", "".join(f"{n}\n" for n in range(1, 101)))
    before = {name: sha256(work / name) for name in ("tiny.qcow2", "data.img")}
    cluster = 710_001
    name = f"alice_example.org_{cluster}.0"
    ad = job_ad(work, "tiny.qcow2:vda:w:qcow2,data.img:vdb:w:raw", cluster) + [
        "VMPARAM_vm_Snapshot_Disk = true", 'VMPARAM_CDROM_Files = "job.sh,numbers.txt"']
    gahp = start(work, stock, gahps, ad)

    # While it runs: QEMU is libvirt-qemu's, and libvirt has handed it every
    # image - the overlays, their base images and the CD-ROM image.
    qemu = qemu_user()
    assert qemu_process_uid(stock, name) == qemu[0]
    running = owners(work)
    for image in ("vmgahp-overlay-vda.qcow2", "vmgahp-overlay-vdb.qcow2", "tiny.qcow2", "data.img",
                  "vmgahp-cdrom.iso"):
        assert running[image] == qemu, (image, running)
    assert status(gahp).startswith("STATUS=Running")

    wait_for_status(gahp, "Stopped", timeout=BOOT_TIMEOUT)
    quit_gahp(gahp)
    # Afterwards every file is the job user's again (libvirt gives back only
    # the top layers; vmgahp the rest), the overlays private to it.
    assert set(owners(work).values()) == {(JOB_UID, JOB_GID)}, owners(work)
    for overlay in ("vmgahp-overlay-vda.qcow2", "vmgahp-overlay-vdb.qcow2"):
        assert (work / overlay).stat().st_mode & 0o777 == 0o600, overlay
    assert not (work / "vmgahp-cdrom.iso").exists()
    output = work / "vmgahp-overlay-vdb.qcow2"  # the first ext4 disk is the guest's /out
    assert read_guest_file(output, "answer.txt") == "sum=5050\n"
    assert (read_guest_file(output, "result.txt") or "").splitlines()[-1:] == ["TINY-GUEST DONE rc=0"]
    assert {name: sha256(work / name) for name in before} == before  # the bases were never written


def test_suspend_resume_checkpoint_and_restart_in_a_new_directory(
    tiny_guest: TinyGuest, stock: PrivateLibvirtd, scratches: list[Path], gahps: list
) -> None:
    first, second = scratches
    n_ticks = 20
    cluster = 710_002
    name = f"alice_example.org_{cluster}.0"

    def ad(work: Path) -> list[str]:
        return job_ad(work, "tiny.img:vda:w:raw", cluster) + [
            "JobVMCheckpoint = true", "VMPARAM_vm_Snapshot_Disk = true", 'VMPARAM_CDROM_Files = "tiny.ticks"']

    tiny_guest.boot_disk(first / "tiny.img", owner=(JOB_UID, JOB_GID))
    give(first / "tiny.ticks", f"{n_ticks}\n")
    gahp = start(first, stock, gahps, ad(first))
    wait_for_console(stock.uri, name, f"tick 2/{n_ticks}", timeout=BOOT_TIMEOUT)

    # Hard suspend: libvirt itself writes the memory state into the scratch
    # dir (which its QEMU user cannot write); it is the job user's afterwards.
    assert gahp.call("CONDOR_VM_SUSPEND", "1", timeout=120) == (True, "NULL"), gahp.stderr_tail()
    memory = first / "xen.mem.ckpt"
    assert (memory.stat().st_uid, memory.stat().st_mode & 0o777) == (JOB_UID, 0o600)
    assert set(owners(first).values()) == {(JOB_UID, JOB_GID)}, owners(first)
    assert status(gahp) == "STATUS=Suspended"
    assert gahp.call("CONDOR_VM_RESUME", "1", timeout=120) == (True, "NULL"), gahp.stderr_tail()
    assert status(gahp).startswith("STATUS=Running")
    wait_for_console(stock.uri, name, f"tick 4/{n_ticks}", timeout=BOOT_TIMEOUT)

    # Checkpoint, then the starter's upload of the new files (before STOP, as
    # a vacate does) and their download into a new scratch dir on a restart.
    assert gahp.call("CONDOR_VM_CHECKPOINT", "1", timeout=120) == (True, "NULL"), gahp.stderr_tail()
    assert set(owners(first).values()) == {(JOB_UID, JOB_GID)}, owners(first)
    before = ticks(first / "vmgahp-overlay-vda.qcow2")
    assert len(before) >= 4, before
    for file in CHECKPOINT_FILES:
        shutil.copy2(first / file, second / file)
        give(second / file)
    assert gahp.call("CONDOR_VM_STOP", "1", timeout=120) == (True, "NULL")
    quit_gahp(gahp)

    tiny_guest.boot_disk(second / "tiny.img", owner=(JOB_UID, JOB_GID))
    give(second / "tiny.ticks", f"{n_ticks}\n")
    restart = start(second, stock, gahps, ad(second))
    assert "domain_restored" in (second / "vmgahp.log").read_text()
    assert qemu_process_uid(stock, name) == qemu_user()[0]
    wait_for_status(restart, "Stopped", timeout=BOOT_TIMEOUT)
    quit_gahp(restart)
    # The output is one overlay (the restart's layer committed into it), the
    # job user's - not libvirt-qemu's, though it was a backing file this run.
    output = second / "vmgahp-overlay-vda.qcow2"
    assert not (second / "vmgahp-overlay-vda.2.qcow2").exists()
    assert set(owners(second).values()) == {(JOB_UID, JOB_GID)}, owners(second)
    assert output.stat().st_mode & 0o777 == 0o600
    assert_finished_in_one_run(output, n_ticks)


def test_a_backing_file_the_job_user_cannot_read_is_refused(
    stock: PrivateLibvirtd, scratches: list[Path], gahps: list
) -> None:
    """A job's qcow2 naming a root-only host file as its backing file: without
    vmgahp's check a stock libvirt chowns that file to libvirt-qemu (and leaves
    it so) and the guest reads it."""
    work = scratches[0]
    host_dir = Path(tempfile.mkdtemp(prefix="vmgahp-host-", dir="/tmp"))
    try:
        os.chmod(host_dir, 0o755)
        secret = host_dir / "secret.img"
        secret.write_bytes(b"not for the guest\n" * 1024)
        os.chmod(secret, 0o600)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(secret),
                        str(work / "evil.qcow2")], check=True, timeout=60)
        give(work / "evil.qcow2")
        gahp = GahpProcess(work, VM_KVM_LIBVIRT_URI=stock.uri, VM_KVM_DOMAIN_TYPE="qemu")
        gahps.append(gahp)
        gahp.handshake()
        gahp.send_ad(job_ad(work, "evil.qcow2:vda:w:qcow2", 710_003))
        assert gahp.call("CONDOR_VM_START", "kvm", timeout=120) == (False, "VMGAHP_ERR_BAD_IMAGE")
        assert "not readable by the job user" in gahp.stderr_tail()
        assert (secret.stat().st_uid, secret.stat().st_gid) == (0, 0)
        assert stock.domains() == []
        quit_gahp(gahp)
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)
