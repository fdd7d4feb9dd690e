"""Checkpoint and restart the way a real HTCondor 25 pool does them (issue 8).

What the pool does, emulated here (seen with HTCondor 25.14's own daemons):

* the starter sends the job ad with **no** ``TransferIntermediate`` - its log
  says ``TransferIntermediate="(none)"`` - on the first run and on a restart;
* a vacate is ``CONDOR_VM_CHECKPOINT`` then ``CONDOR_VM_STOP``; between the
  two the starter uploads every file of the scratch directory that is new or
  changed since the input transfer into the job's SPOOL (a later upload
  replaces an earlier file of the same name, nothing is removed from SPOOL);
* on the restart the shadow brings fresh copies of the job's input files and
  every SPOOL file into a **new** scratch directory.

The guest is the tiny test guest counting ticks onto its boot disk (a snapshot
disk), with its tick count on a CD-ROM; it must resume, not boot again: one
"boot" line, ticks 1..N with none lost or repeated, and its final result.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from gahp_process import GahpProcess, job_ad
from guest_fixture import read_guest_file, wait_for_console
from helpers import TESTS

pytestmark = pytest.mark.libvirtd

HERE = TESTS
STOCK_LIKE_SCRIPT = HERE / "xml_scripts" / "simple_libvirt_xml.py"
MAC = "52:54:00:0c:0f:fe"
KNOBS = dict(VM_KVM_DOMAIN_TYPE="qemu", VM_NETWORKING="true", VM_NETWORKING_TYPE="user",
             VM_GAHP_SHUTDOWN_TIMEOUT="10")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir() if p.is_file()}


def _ticks(progress: str | None) -> list[int]:
    return [int(n) for n in re.findall(r"^tick (\d+)$", progress or "", re.M)]


class PoolJob:
    """One job's runs on the emulated pool: scratch directories, SPOOL, the ad."""

    def __init__(self, tiny_guest, uri: str, cluster: int, ticks: int, **knobs: str) -> None:
        self.top = Path(tempfile.mkdtemp(prefix="vmgahp-pool-"))
        os.chmod(self.top, 0o755)
        self.uri, self.knobs = uri, {**KNOBS, **knobs}
        self.cluster, self.ticks = cluster, ticks
        self.name = f"pool_vmgahp.test_{cluster}.0"
        self.submit = self.top / "submit"  # the job's input files, on the submit side
        self.submit.mkdir()
        self.spool = self.top / "spool"
        self.spool.mkdir()
        self.base = tiny_guest.boot_disk(self.submit / "boot.img", owner=None)
        (self.submit / "tiny.ticks").write_text(f"{ticks}\n")
        self.base_sha = _sha256(self.base)
        self.runs = 0
        self.gahps: list[GahpProcess] = []

    def ad(self, scratch: Path) -> list[str]:
        return job_ad(
            scratch, disk="boot.img:vda:w:raw", ClusterId=str(self.cluster), User='"pool@vmgahp.test"',
            JobVMMemory="256", JobVMCheckpoint="true", VMPARAM_vm_Snapshot_Disk="true",
            JobVMNetworking="true", JobVMNetworkingType='"user"', JobVM_MACADDR=f'"{MAC}"',
            VMPARAM_CDROM_Files='"tiny.ticks"', TransferInput='"boot.img,tiny.ticks"',
            WhenToTransferOutput='"ON_EXIT_OR_EVICT"',
        )  # no TransferIntermediate, as HTCondor 25's starter sends it

    def new_scratch(self) -> tuple[Path, dict[str, tuple[int, int]], dict[str, str]]:
        """Input files, fresh from the submit side, plus everything in SPOOL."""
        self.runs += 1
        scratch = self.top / f"dir_{self.runs}"
        scratch.mkdir(mode=0o755, exist_ok=True)  # a test may have mounted a filesystem there
        for source in [*self.submit.iterdir(), *self.spool.iterdir()]:
            shutil.copy2(source, scratch / source.name)
            os.chown(scratch / source.name, 1000, 1000)
        came_back = {p.name: _sha256(p) for p in self.spool.iterdir()}
        return scratch, _state(scratch), came_back

    def start(self, scratch: Path) -> GahpProcess:
        gahp = GahpProcess(scratch, VM_KVM_LIBVIRT_URI=self.uri, **self.knobs)
        self.gahps.append(gahp)
        gahp.handshake()
        gahp.send_ad(self.ad(scratch))
        assert gahp.call("CONDOR_VM_START", "kvm", timeout=120) == (True, "1")
        return gahp

    def vacate(self, gahp: GahpProcess, scratch: Path, transferred: dict[str, tuple[int, int]]) -> None:
        assert gahp.call("CONDOR_VM_CHECKPOINT", "1", timeout=120) == (True, "NULL")
        for name, state in _state(scratch).items():  # the intermediate upload
            if name != "vmgahp.log" and transferred.get(name) != state:
                shutil.copy2(scratch / name, self.spool / name)
        assert gahp.call("CONDOR_VM_STOP", "1") == (True, "NULL")
        assert gahp.reply("QUIT") == "S"
        assert gahp.wait() == 0

    def finish(self, gahp: GahpProcess, scratch: Path) -> str:
        """Wait for the guest to power off; QUIT; the guest's progress file."""
        import time

        end = time.monotonic() + 240
        while True:
            ok, text = gahp.call("CONDOR_VM_STATUS", "1")
            assert ok, text
            if text == "STATUS=Stopped":
                break
            assert time.monotonic() < end, "the guest did not finish"
            time.sleep(1.0)
        assert gahp.reply("QUIT") == "S"
        assert gahp.wait() == 0
        overlays = sorted(p.name for p in scratch.glob("vmgahp-overlay-*"))
        assert overlays == ["vmgahp-overlay-vda.qcow2"], overlays  # the layers, committed into one
        result = read_guest_file(scratch / "vmgahp-overlay-vda.qcow2", "result.txt")
        assert result and "TINY-GUEST DONE rc=0" in result, result
        assert _sha256(self.base) == self.base_sha and _sha256(scratch / "boot.img") == self.base_sha
        return read_guest_file(scratch / "vmgahp-overlay-vda.qcow2", "progress.txt") or ""

    def close(self) -> None:
        for gahp in self.gahps:
            gahp.kill()
        if not os.environ.get("VMGAHP_KEEP_TEST_DIRS"):
            shutil.rmtree(self.top, ignore_errors=True)


def _domain_xml(uri: str, name: str) -> str:
    import libvirt

    conn = libvirt.open(uri)
    try:
        return conn.lookupByName(name).XMLDesc(0)
    finally:
        conn.close()


def _run_with_vacates(job: PoolJob, vacates: int) -> str:
    scratch, transferred, came_back = job.new_scratch()
    gahp = job.start(scratch)
    for number in range(vacates):
        wait_for_console(job.uri, job.name, f"tick {4 * (number + 1)}/{job.ticks}", timeout=180)
        job.vacate(gahp, scratch, transferred)
        scratch, transferred, came_back = job.new_scratch()
        assert {"vmgahp-checkpoint.json", "xen.mem.ckpt"} <= set(came_back)
        gahp = job.start(scratch)
        log = (scratch / "vmgahp.log").read_text()
        assert '"domain_restored"' in log and '"domain_started"' not in log, "cold-booted"
        assert MAC in _domain_xml(job.uri, job.name)  # the NIC keeps its address
        # Nothing that came back was changed by the restart.
        assert {name: _sha256(scratch / name) for name in came_back} == came_back
    return job.finish(gahp, scratch)


@pytest.mark.parametrize("xml", ["builtin", "script"])
def test_restart_without_transfer_intermediate_resumes(tiny_guest, libvirt_uri: str, xml: str) -> None:
    """The real pool's restart: no TransferIntermediate, a new scratch directory,
    with the built-in XML and with a LIBVIRT_XML_SCRIPT that follows the stock
    script's contract. One boot, every tick, the answer written."""
    knobs = {"LIBVIRT_XML_SCRIPT": str(STOCK_LIKE_SCRIPT)} if xml == "script" else {"LIBVIRT_XML_SCRIPT": ""}
    job = PoolJob(tiny_guest, libvirt_uri, cluster=81 if xml == "builtin" else 82, ticks=14, **knobs)
    try:
        progress = _run_with_vacates(job, vacates=1)
        assert _ticks(progress) == list(range(1, 15)), progress
        assert progress.count("boot ") == 1, progress
    finally:
        job.close()


def test_two_vacates_in_a_row_keep_every_tick(tiny_guest, libvirt_uri: str) -> None:
    """checkpoint -> restart -> checkpoint -> restart: still one boot and every tick."""
    job = PoolJob(tiny_guest, libvirt_uri, cluster=83, ticks=16, LIBVIRT_XML_SCRIPT="")
    try:
        progress = _run_with_vacates(job, vacates=2)
        assert _ticks(progress) == list(range(1, 17)), progress
        assert progress.count("boot ") == 1, progress
    finally:
        job.close()


def test_a_full_filesystem_during_a_checkpoint_keeps_the_previous_one(tiny_guest, libvirt_uri: str) -> None:
    """Issue 7: the scratch filesystem (a small tmpfs) fills up while a second
    checkpoint is written. The CHECKPOINT fails with its token, and the previous
    checkpoint - the one this run was restored from - is intact: the next run
    restores it and the guest carries on from there, one boot, every tick."""
    import subprocess

    job = PoolJob(tiny_guest, libvirt_uri, cluster=84, ticks=16, LIBVIRT_XML_SCRIPT="")
    mounted: list[Path] = []
    try:
        scratch, transferred, _ = job.new_scratch()
        gahp = job.start(scratch)
        wait_for_console(job.uri, job.name, f"tick 4/{job.ticks}", timeout=180)
        job.vacate(gahp, scratch, transferred)

        # The next run's scratch dir on a filesystem with room for what comes back
        # and a few MiB more - not for another memory state.
        small = job.top / f"dir_{job.runs + 1}"
        small.mkdir(mode=0o755)
        need = sum(p.stat().st_size for p in [*job.submit.iterdir(), *job.spool.iterdir()])
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={need + (12 << 20)},mode=0755", "tmpfs", str(small)],
                       check=True)
        mounted.append(small)
        scratch, transferred, came_back = job.new_scratch()
        assert scratch == small
        gahp = job.start(scratch)
        wait_for_console(job.uri, job.name, f"tick 8/{job.ticks}", timeout=180)
        ok, token = gahp.call("CONDOR_VM_CHECKPOINT", "1", timeout=120)
        assert (ok, token) == (False, "VMGAHP_ERR_VM_CANNOT_CREATE_CKPT_FILES")
        assert "No space left" in (scratch / "vmgahp.log").read_text()
        assert not list(scratch.glob("*.partial")) and not list(scratch.glob("*.next"))
        assert {name: _sha256(scratch / name) for name in came_back} == came_back  # the previous one, intact
        assert gahp.call("CONDOR_VM_STATUS", "1")[1].startswith("STATUS=Running")  # the guest lives on
        for name, state in _state(scratch).items():  # the vacate's upload, as after any checkpoint failure
            if name != "vmgahp.log" and transferred.get(name) != state:
                shutil.copy2(scratch / name, job.spool / name)
        assert gahp.call("CONDOR_VM_STOP", "1") == (True, "NULL")
        assert gahp.reply("QUIT") == "S"
        assert gahp.wait() == 0

        scratch, _, _ = job.new_scratch()
        gahp = job.start(scratch)
        assert '"domain_restored"' in (scratch / "vmgahp.log").read_text()
        progress = job.finish(gahp, scratch)
        assert _ticks(progress) == list(range(1, 17)), progress
        assert progress.count("boot ") == 1, progress
    finally:
        job.close()
        for path in mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)
