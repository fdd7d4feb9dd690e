"""The KVM and Xen part of a job ad (spec 4.3, after the common checks).

* Xen first reads its boot settings (``VMPARAM_Xen_Kernel``: ``included``,
  ``vmx`` or a kernel path; initrd; root), then both read the disk list
  ``VMPARAM_vm_Disk = file:device:perm[:format], ...`` (spec 4.5);
* ``VMPARAM_vm_Snapshot_Disk`` (vmgahp's; default ``VM_SNAPSHOT_DISK``) puts
  writable disks on qcow2 overlays, which also lets a job checkpoint with
  transferred disks (the C++ answers ``*_MISMATCHED_CHECKPOINT``);
* the CD-ROM image goes on ``VMPARAM_Kvm_CDROM_Device`` /
  ``VMPARAM_Xen_CDROM_Device``, by default ``hdc`` (``xvdc`` for a
  paravirtualised Xen guest, which sees only xvd* devices).

Each failure carries the token of the VM type's family (KVM_* or XEN_*).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from vmgahp.errors import GahpError, VmgahpError
from vmgahp.job.access import JobUser, can_access
from vmgahp.job.model import Disk, is_cdrom_image, resolve_transferred
from vmgahp.protocol import tokens

if TYPE_CHECKING:
    from vmgahp.drivers.libvirt.settings import LibvirtSettings
    from vmgahp.job.jobad import JobAd
    from vmgahp.job.model import VmJob

# The token family of each VM type: (no disk, invalid disk, mismatched checkpoint).
DISK_TOKENS = {
    "kvm": (tokens.KVM_NO_DISK_PARAM, tokens.KVM_INVALID_DISK_PARAM, tokens.KVM_MISMATCHED_CHECKPOINT),
    "xen": (tokens.XEN_NO_DISK_PARAM, tokens.XEN_INVALID_DISK_PARAM, tokens.XEN_MISMATCHED_CHECKPOINT),
}


class XenBoot(BaseModel):
    model_config = ConfigDict(frozen=True)

    kernel: str  # "included", "vmx" or a kernel path
    initrd: str = ""
    root: str = ""
    kernel_params: str = ""
    bootloader: str = ""

    @property
    def mode(self) -> Literal["included", "vmx", "kernel"]:
        lowered = self.kernel.lower()
        if lowered == "included":
            return "included"
        if lowered == "vmx":
            return "vmx"
        return "kernel"


class DiskListError(VmgahpError, ValueError):
    """The disk list is invalid; the message says which item and why."""


def default_cdrom_device(xen: XenBoot | None) -> str:
    """Paravirtualised Xen guests see only xvd* devices; everything else has IDE."""
    return "xvdc" if xen is not None and xen.mode != "vmx" else "hdc"


def read_job(ad: JobAd, job: VmJob, user: JobUser | None, settings: LibvirtSettings) -> VmJob:
    working_dir = job.working_dir
    xen = _xen_boot(ad, settings, working_dir, job.hardware_vt, user) if job.vm_type == "xen" else None
    no_disk, invalid_disk, mismatched_ckpt = DISK_TOKENS[job.vm_type]
    disk_text = ad.get_str("VMPARAM_vm_Disk")
    if not disk_text or not disk_text.strip():
        raise GahpError(no_disk, "VMPARAM_vm_Disk is missing")
    try:
        disks = parse_disk_list(disk_text, working_dir, user)
    except DiskListError as exc:
        raise GahpError(invalid_disk, str(exc)) from exc
    snapshot_disk = ad.get_bool("VMPARAM_vm_Snapshot_Disk")
    if snapshot_disk is None:
        snapshot_disk = settings.snapshot_disk_default
    # The C++ refuses to checkpoint transferred disks: its checkpoint never
    # holds them. With snapshot disks every writable disk is an overlay in
    # the working dir that travels with the checkpoint, so vmgahp allows it.
    if job.checkpoint and not snapshot_disk and any(d.transferred for d in disks):
        raise GahpError(mismatched_ckpt, "checkpointing needs every disk on a shared filesystem "
                                         "(or +VMPARAM_vm_Snapshot_Disk = true)")
    device_attr = "VMPARAM_Xen_CDROM_Device" if xen is not None else "VMPARAM_Kvm_CDROM_Device"
    cdrom_device = (ad.get_str(device_attr) or "").strip().lower() or default_cdrom_device(xen)
    if ad.get_str("VMPARAM_CDROM_Files"):
        _check_cdrom_device(disks, cdrom_device, working_dir, invalid_disk)
    return job.model_copy(update={"disks": disks, "extras": xen, "snapshot_disk": snapshot_disk,
                                  "cdrom_device": cdrom_device, "firmware": _firmware(ad, job.vm_type, invalid_disk)})


def _firmware(ad: JobAd, vm_type: str, token: str) -> str:
    """VMPARAM_Firmware: how the guest boots is part of its boot medium, so a bad
    value is the job's fault (held with the disk token), like a bad vm_disk."""
    from vmgahp.drivers.libvirt.firmware import ATTR, parse_kind

    text = ad.get_str(ATTR)
    kind = parse_kind(text)
    if kind is None:
        raise GahpError(token, f"{ATTR} = {text!r}: expected bios or uefi")
    if kind == "uefi" and vm_type != "kvm":
        raise GahpError(token, f"{ATTR} = uefi is for KVM guests (a Xen HVM guest boots hvmloader)")
    return kind


def _check_cdrom_device(disks: tuple[Disk, ...], device: str, working_dir: str, token: str) -> None:
    # Two disks on one target make libvirt fail with a message the starter
    # never sees; say which job setting clashes instead.
    for disk in disks:
        if disk.device == device:
            raise GahpError(token, f"vm_disk {disk.path} uses {disk.device}, the CD-ROM device")
        if is_cdrom_image(disk.path, working_dir):
            raise GahpError(token, f"vm_disk {disk.path} is the CD-ROM image vmgahp builds")


def working_dir_files(working_dir: str) -> set[str]:
    try:
        return {entry.name for entry in os.scandir(working_dir) if entry.is_file()}
    except OSError:
        return set()


def parse_disk_list(text: str, working_dir: str, user: JobUser | None) -> tuple[Disk, ...]:
    """Rules of spec 4.5: empty items and fields are skipped, every item has 3
    or 4 fields, a file whose basename is in the working directory is the
    transferred copy, any other file must be an absolute path, and the job
    user must be able to read it (or write it, for ``w``/``rw``)."""
    items = [item.strip() for item in text.strip().split(",") if item.strip()]
    if not items:
        raise DiskListError("no disk in the list")
    local_files = working_dir_files(working_dir)
    disks = []
    for item in items:
        fields = [f for f in item.split(":") if f]
        if len(fields) not in (3, 4):
            raise DiskListError(f"{item!r}: expected file:device:permission[:format]")
        file_name = fields[0].strip()
        base = os.path.basename(file_name)
        if base and base in local_files:
            path, transferred = os.path.join(working_dir, base), True
        elif os.path.isabs(file_name):
            path, transferred = file_name, False
        else:
            raise DiskListError(f"{file_name!r} is neither in the working directory nor an absolute path")
        device = fields[1].strip().lower()
        permission = fields[2].strip()
        fmt = fields[3].strip().lower() if len(fields) == 4 else ""
        disk = Disk(path=path, device=device, permission=permission, format=fmt, transferred=transferred)
        if not device:
            raise DiskListError(f"{item!r}: empty device name")
        if not can_access(path, user, write=disk.writable):
            need = "write" if disk.writable else "read"
            raise DiskListError(f"{path}: the job user cannot {need} it (or it does not exist)")
        disks.append(disk)
    return tuple(disks)


def _boot_file(path: str, working_dir: str, user: JobUser | None, token: str, what: str) -> str:
    """A Xen kernel or initrd: the path *as written* must be readable (a relative
    one from the working dir, the gahp's cwd) before a transferred copy of the
    same name is used (xen_type.linux.cpp:1587-1619, spec 4.3)."""
    as_written = path if os.path.isabs(path) else os.path.join(working_dir, path)
    if not can_access(as_written, user):
        raise GahpError(token, f"cannot read the {what} {path!r} (checked as written, as the job user)")
    return resolve_transferred(path, working_dir)


def _xen_boot(
    ad: JobAd, settings: LibvirtSettings, working_dir: str, hardware_vt: bool, user: JobUser | None
) -> XenBoot:
    kernel = (ad.get_str("VMPARAM_Xen_Kernel") or "").strip()
    if not kernel:
        raise GahpError(tokens.XEN_NO_KERNEL_PARAM, "VMPARAM_Xen_Kernel is missing")
    initrd = (ad.get_str("VMPARAM_Xen_Initrd") or "").strip()
    root = (ad.get_str("VMPARAM_Xen_Root") or "").strip()
    params = (ad.get_str("VMPARAM_Xen_Kernel_Params") or "").strip()
    lowered = kernel.lower()
    if lowered == "included":
        if not settings.xen_bootloader:
            raise GahpError(tokens.CRITICAL, "XEN_BOOTLOADER is not configured")
        return XenBoot(kernel="included", bootloader=settings.xen_bootloader, kernel_params=params)
    if lowered == "vmx":
        if not hardware_vt:
            raise GahpError(tokens.JOBCLASSAD_MISMATCHED_HARDWARE_VT, "xen_kernel = vmx needs JobVMHardwareVT")
        return XenBoot(kernel="vmx", kernel_params=params)
    kernel_path = _boot_file(kernel, working_dir, user, tokens.XEN_KERNEL_NOT_FOUND, "kernel")
    if initrd:
        initrd = _boot_file(initrd, working_dir, user, tokens.XEN_INITRD_NOT_FOUND, "initrd")
    if not root:
        raise GahpError(tokens.XEN_NO_ROOT_DEVICE_PARAM, "VMPARAM_Xen_Root is required with a kernel path")
    return XenBoot(kernel=kernel_path, initrd=initrd, root=root, kernel_params=params)
