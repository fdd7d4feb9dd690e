"""The libvirt driver against a real libvirtd and QEMU (software emulation).

The guest is a blank raw disk: SeaBIOS finds nothing to boot and waits, which
is enough to run, pause, save, restore and stop a real domain. It ignores
the ACPI power button, so shutdown() must destroy it after the grace.
"""

from __future__ import annotations

import os
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from libvirtd_fixture import Libvirtd
from vmgahp import errors
from vmgahp.gahp.config import Settings
from vmgahp.drivers.base import DomainState
from vmgahp.drivers.libvirt.driver import LibvirtHypervisor
from vmgahp.errors import GahpError
from vmgahp.job.model import Disk, VmJob

pytestmark = pytest.mark.libvirtd


@pytest.fixture
def hv(libvirtd: Libvirtd) -> LibvirtHypervisor:
    cfg = Settings(vm_memory=1024, kvm_uri=libvirtd.uri, kvm_domain_type="qemu", shutdown_timeout=2)
    hypervisor = LibvirtHypervisor(cfg, "kvm")
    hypervisor.check_host()
    yield hypervisor
    hypervisor.close()


def blank_disk(path: Path, size: int = 1 << 20) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def real_job(workdir: Path, *disks: Disk) -> VmJob:
    return VmJob(
        vm_type="kvm",
        name=f"vmgahp_test_{uuid.uuid4().hex[:8]}_1.0",
        working_dir=str(workdir),
        memory_mib=64,
        disks=disks or (Disk(path=str(blank_disk(workdir / "disk.img")), device="vda", permission="w", format="raw"),),
    )


def wait_for(predicate, timeout: float = 5.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def test_real_lifecycle(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    job = real_job(tmp_path)
    try:
        domain = hv.create(job)
        # TCG needs a moment to charge CPU time to the domain.
        assert wait_for(lambda: domain.info().cpu_time_ns > 0)
        info = domain.info()
        assert info.state is DomainState.RUNNING
        assert info.max_memory_kib == 64 * 1024 and info.vcpus == 1

        domain.pause()
        assert domain.info().state is DomainState.PAUSED
        domain.unpause()
        assert domain.info().state is DomainState.RUNNING

        save_file = tmp_path / "xen.mem.ckpt"
        domain.pause()  # saved paused: must still come back running
        domain.save(save_file)
        assert save_file.stat().st_size > 0
        assert domain.info().state is DomainState.GONE

        # Restore with the disk moved, as a checkpoint restarted in another
        # working directory would: the image's XML is pointed at the new path.
        moved = tmp_path / "moved.img"
        os.rename(job.disks[0].path, moved)
        moved_job = job.model_copy(update={"disks": (job.disks[0].model_copy(update={"path": str(moved)}),)})
        restored = hv.restore(moved_job, save_file)
        assert restored.info().state is DomainState.RUNNING
        xml = ET.fromstring(hv.connection.get().lookupByName(job.name).XMLDesc())
        assert xml.find("devices/disk/source").get("file") == str(moved)

        began = time.monotonic()
        restored.shutdown(grace_seconds=2)  # SeaBIOS ignores ACPI: destroyed after the grace
        assert time.monotonic() - began >= 1.9
        assert restored.info().state is DomainState.GONE
    finally:
        hv.destroy_by_name(job.name)


def test_real_missing_disk_is_bad_image(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    missing = Disk(path=str(tmp_path / "missing.img"), device="vda", permission="w", format="raw")
    job = real_job(tmp_path, missing)
    try:
        with pytest.raises(GahpError) as info:
            hv.create(job)
        assert info.value.token == errors.BAD_IMAGE
        assert missing.path in info.value.detail
    finally:
        hv.destroy_by_name(job.name)


def test_real_wrong_format_is_bad_image(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    """A raw file declared qcow2: QEMU says "Image is not in qcow2 format"."""
    disk = Disk(path=str(blank_disk(tmp_path / "raw.img")), device="vda", permission="w", format="qcow2")
    job = real_job(tmp_path, disk)
    try:
        with pytest.raises(GahpError) as info:
            hv.create(job)
        assert info.value.token == errors.BAD_IMAGE
        assert "not in qcow2 format" in info.value.detail
    finally:
        hv.destroy_by_name(job.name)



def test_real_locked_image_is_internal(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    """An image another process holds open for writing: QEMU cannot get its lock.
    A good image on a busy host is not the job's fault, so the job is requeued
    (INTERNAL), not held (BAD_IMAGE)."""
    import subprocess

    image = blank_disk(tmp_path / "locked.img")
    holder = subprocess.Popen(["qemu-io", "-f", "raw", str(image)], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: any(f"{image}" in os.readlink(f"/proc/{holder.pid}/fd/{fd}")
                                    for fd in os.listdir(f"/proc/{holder.pid}/fd")), timeout=10)
        job = real_job(tmp_path, Disk(path=str(image), device="vda", permission="w", format="raw"))
        with pytest.raises(GahpError) as info:
            hv.create(job)
        assert info.value.token == errors.INTERNAL
        assert "lock" in info.value.detail
        assert hv.lookup(job.name) is None
    finally:
        holder.kill()
        holder.wait()
