"""The libvirt driver against a real libvirtd and QEMU (software emulation).

The guest is a blank raw disk: SeaBIOS finds nothing to boot and waits, which
is enough to run, pause, save, restore and stop a real domain. It ignores
the ACPI power button, so shutdown() must destroy it after the grace.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import settings
from libvirtd_fixture import Libvirtd
from vmgahp.drivers.base import DomainState, HostError, JobImageError
from vmgahp.drivers.libvirt import save_image
from vmgahp.drivers.libvirt.driver import LibvirtHypervisor
from vmgahp.job.model import Disk, VmJob

pytestmark = pytest.mark.libvirtd


@pytest.fixture
def hv(libvirtd: Libvirtd) -> LibvirtHypervisor:
    hypervisor = LibvirtHypervisor(settings(VM_KVM_LIBVIRT_URI=libvirtd.uri, VM_KVM_DOMAIN_TYPE="qemu"), "kvm")
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

        domain.pause()  # saved paused: must still come back running
        saved = domain.save(tmp_path, "")
        assert (tmp_path / saved.files[0]).stat().st_size > 0
        assert domain.info().state is DomainState.GONE

        # Restore with the disk moved, as a checkpoint restarted in another
        # working directory would: the image's XML is pointed at the new path.
        moved = tmp_path / "moved.img"
        os.rename(job.disks[0].path, moved)
        moved_job = job.model_copy(update={"disks": (job.disks[0].model_copy(update={"path": str(moved)}),)})
        restored = hv.restore(moved_job, saved)
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
        with pytest.raises(JobImageError) as info:
            hv.create(job)
        assert missing.path in info.value.message
    finally:
        hv.destroy_by_name(job.name)


def test_real_wrong_format_is_bad_image(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    """A raw file declared qcow2: QEMU says "Image is not in qcow2 format"."""
    disk = Disk(path=str(blank_disk(tmp_path / "raw.img")), device="vda", permission="w", format="qcow2")
    job = real_job(tmp_path, disk)
    try:
        with pytest.raises(JobImageError) as info:
            hv.create(job)
        assert "not in qcow2 format" in info.value.message
    finally:
        hv.destroy_by_name(job.name)


def test_real_locked_image_is_internal(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    """An image another process holds open for writing: QEMU cannot get its lock.
    A good image on a busy host is not the job's fault: the host's (the job is
    requeued), not the image's (held)."""
    image = blank_disk(tmp_path / "locked.img")
    holder = subprocess.Popen(["qemu-io", "-f", "raw", str(image)], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: any(f"{image}" in os.readlink(f"/proc/{holder.pid}/fd/{fd}")
                                    for fd in os.listdir(f"/proc/{holder.pid}/fd")), timeout=10)
        job = real_job(tmp_path, Disk(path=str(image), device="vda", permission="w", format="raw"))
        with pytest.raises(HostError) as info:
            hv.create(job)
        assert "lock" in info.value.message
        assert hv.lookup(job.name) is None
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------ compressed memory states
def _running(hv: LibvirtHypervisor, tmp_path: Path) -> tuple[VmJob, object]:
    job = real_job(tmp_path)
    domain = hv.create(job)
    assert wait_for(lambda: domain.info().cpu_time_ns > 0)
    return job, domain


def test_real_save_is_compressed_and_restores(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    job, domain = _running(hv, tmp_path)
    try:
        saved = domain.save(tmp_path, ".partial")
        state = tmp_path / (saved.files[0] + ".partial")
        assert save_image.is_compressed(state)
        image = subprocess.run([save_image.find_zstd(), "-q", "-d", "-c", str(state)],
                               capture_output=True, check=True).stdout
        assert image[:16] == save_image.LIBVIRT_COMPLETE  # libvirt's final header, byte for byte
        assert len(image) > 3 * state.stat().st_size
        os.replace(state, tmp_path / saved.files[0])
        restored = hv.restore(job, saved)
        assert restored.info().state is DomainState.RUNNING
        assert not list(tmp_path.glob("*.raw"))
    finally:
        hv.destroy_by_name(job.name)


def test_real_uncompressed_state_still_restores(hv: LibvirtHypervisor, libvirtd: Libvirtd, tmp_path: Path) -> None:
    """A state of an older vmgahp, the C++ gahp or a node with compression off."""
    plain = LibvirtHypervisor(settings(VM_KVM_LIBVIRT_URI=libvirtd.uri, VM_KVM_DOMAIN_TYPE="qemu",
                                       VM_CHECKPOINT_COMPRESSION="false"), "kvm")
    job, domain = _running(plain, tmp_path)
    try:
        saved = plain.lookup(job.name).save(tmp_path, "")
        with open(tmp_path / saved.files[0], "rb") as handle:
            assert handle.read(16) == save_image.LIBVIRT_COMPLETE
        assert hv.restore(job, saved).info().state is DomainState.RUNNING
    finally:
        hv.destroy_by_name(job.name)
        plain.close()


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_real_damaged_compressed_state_is_the_jobs_and_leaves_no_domain(
        hv: LibvirtHypervisor, tmp_path: Path, damage: str) -> None:
    job, domain = _running(hv, tmp_path)
    try:
        saved = domain.save(tmp_path, "")
        state = tmp_path / saved.files[0]
        data = bytearray(state.read_bytes())
        if damage == "flipped":
            data[save_image.SLOT + (len(data) - save_image.SLOT) // 2] ^= 0x10
        else:
            del data[save_image.SLOT + (len(data) - save_image.SLOT) // 2:]
        state.write_bytes(bytes(data))
        with pytest.raises(JobImageError, match="damaged"):
            hv.restore(job, saved)
        assert hv.lookup(job.name) is None
    finally:
        hv.destroy_by_name(job.name)


def test_real_state_whose_error_text_is_not_utf8_is_the_jobs(
        hv: LibvirtHypervisor, libvirtd: Libvirtd, tmp_path: Path) -> None:
    """libvirt quotes a damaged image's bytes in its error; libvirt-python
    cannot decode them and raises SystemError, which must still be the job's
    image error (CI met it through QEMU's text about a flipped byte)."""
    plain = LibvirtHypervisor(settings(VM_KVM_LIBVIRT_URI=libvirtd.uri, VM_KVM_DOMAIN_TYPE="qemu",
                                       VM_CHECKPOINT_COMPRESSION="false"), "kvm")
    job, domain = _running(plain, tmp_path)
    try:
        saved = domain.save(tmp_path, "")
        state = tmp_path / saved.files[0]
        data = bytearray(state.read_bytes())
        at = data.index(b"<name>") + len(b"<name>")
        data[at:at + 2] = b"\xff\x83"  # same length: the header's sizes still hold
        state.write_bytes(bytes(data))
        with pytest.raises(JobImageError, match="not proper UTF-8") as caught:
            plain.restore(job, saved)
        assert "\ufffd" in str(caught.value)
        assert plain.lookup(job.name) is None
    finally:
        plain.destroy_by_name(job.name)
        plain.close()
