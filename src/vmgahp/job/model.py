"""Job ClassAd -> a validated, typed VM description (pydantic).

:func:`build_job` runs the C++ gahp's checks in the C++ order (spec 4.3,
``parseCommonParamFromClassAd`` then the KVM or Xen part), so the first
failure yields the token the starter expects. Unknown attributes are ignored.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict

from vmgahp import errors
from vmgahp.job.access import JobUser, can_access
from vmgahp.gahp.config import Settings
from vmgahp.job.disks import Disk, DiskListError, parse_disk_list
from vmgahp.errors import GahpError
from vmgahp.job.jobad import JobAd
from vmgahp.job.networking import NetworkPlan

MIN_MEMORY_MIB = 32  # the C++ raises smaller requests to 32 MiB


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
        if lowered in ("included", "vmx"):
            return lowered  # type: ignore[return-value]
        return "kernel"


class VmJob(BaseModel):
    """Everything a driver needs to build and run the VM of one job."""

    model_config = ConfigDict(frozen=True)

    vm_type: Literal["kvm", "xen"]
    name: str
    working_dir: str
    memory_mib: int
    vcpus: int = 1
    networking_type: str = ""  # "" when the job has no network
    mac: str = ""
    bridge_interface: str = ""
    checkpoint: bool = False
    hardware_vt: bool = False
    vnc_console: bool = False
    no_output_vm: bool = False
    disks: tuple[Disk, ...] = ()
    xen: XenBoot | None = None
    transfer_intermediate: tuple[str, ...] = ()
    snapshot_disk: bool = False  # writable disks run on qcow2 overlays
    cdrom_files: tuple[str, ...] = ()  # resolved files for the job's ISO image
    cdrom_device: str = ""  # target device of that ISO, e.g. hdc
    cdrom_built: str = ""  # the ISO vmgahp built for this run ("" when reused or none)
    owner_uid: int | None = None
    owner_gid: int | None = None
    ad_text: str = ""  # the ad as sorted Name = value lines (XML script input)

    @property
    def has_transferred_disk(self) -> bool:
        return any(d.transferred for d in self.disks)


def default_cdrom_device(xen: XenBoot | None) -> str:
    """Paravirtualised Xen guests see only xvd* devices; everything else has IDE."""
    return "xvdc" if xen is not None and xen.mode != "vmx" else "hdc"


def vm_name(ad: JobAd) -> str | None:
    """``<User with @ -> _>_<ClusterId>.<ProcId>`` (create_name_for_VM)."""
    user = ad.get_str("User")
    cluster = ad.get_int("ClusterId")
    proc = ad.get_int("ProcId")
    if not user or cluster is None or proc is None:
        return None
    return f"{user.replace('@', '_')}_{cluster}.{proc}"


def _split_list(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(item.strip() for item in text.split(",") if item.strip())


def build_job(
    ad: JobAd,
    vm_type: str,
    settings: Settings,
    network: NetworkPlan,
    user: JobUser | None,
) -> VmJob:
    """Validate the ad for ``vm_type``; raise GahpError with the C++ token."""
    working_dir = ad.get_str("VM_WORKING_DIR") or ""

    # 1. memory
    memory = ad.get_int("JobVMMemory")
    if memory is None:
        memory = ad.get_int("RequestMemory")
    if memory is None:
        raise GahpError(errors.JOBCLASSAD_NO_VM_MEMORY_PARAM, "neither JobVMMemory nor RequestMemory")
    if memory <= 0 or memory > settings.vm_memory:
        raise GahpError(
            errors.JOBCLASSAD_TOO_MUCH_MEMORY_REQUEST,
            f"{memory} MiB requested, VM_MEMORY allows {settings.vm_memory} MiB",
        )
    # 2. vcpus
    vcpus = ad.get_int("JobVM_VCPUS")
    if vcpus is None:
        vcpus = ad.get_int("RequestCpus")
    vcpus = max(1, vcpus or 1)
    # 3. networking
    networking_type = ""
    mac = ""
    if ad.get_bool("JobVMNetworking"):
        if not network.enabled:
            raise GahpError(errors.JOBCLASSAD_MISMATCHED_NETWORKING, "networking is off on this host")
        wanted = (ad.get_str("JobVMNetworkingType") or "").strip().lower()
        if wanted and wanted not in network.types:
            raise GahpError(
                errors.JOBCLASSAD_MISMATCHED_NETWORKING_TYPE,
                f"type {wanted!r} not in {','.join(network.types)}",
            )
        networking_type = wanted or network.default
        mac = (ad.get_str("JobVM_MACADDR") or "").strip()
    # 4. checkpoint flag
    checkpoint = bool(ad.get_bool("JobVMCheckpoint"))
    # 5. VM name
    name = vm_name(ad)
    if name is None:
        raise GahpError(errors.CRITICAL, "the VM name needs User, ClusterId and ProcId")
    # 6. hardware VT
    hardware_vt = bool(ad.get_bool("JobVMHardwareVT"))
    if hardware_vt and not settings.hardware_vt:
        raise GahpError(errors.JOBCLASSAD_MISMATCHED_HARDWARE_VT, "VM_HARDWARE_VT is off")
    # 7. no-output flag
    no_output_vm = bool(ad.get_bool("VMPARAM_No_Output_VM"))
    # 8. memory floor
    memory = max(memory, MIN_MEMORY_MIB)

    xen = None
    if vm_type == "xen":
        xen = _xen_boot(ad, settings, working_dir, hardware_vt, user)
        disk_tokens = (errors.XEN_NO_DISK_PARAM, errors.XEN_INVALID_DISK_PARAM, errors.XEN_MISMATCHED_CHECKPOINT)
    else:
        disk_tokens = (errors.KVM_NO_DISK_PARAM, errors.KVM_INVALID_DISK_PARAM, errors.KVM_MISMATCHED_CHECKPOINT)
    no_disk, invalid_disk, mismatched_ckpt = disk_tokens

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
    if checkpoint and not snapshot_disk and any(d.transferred for d in disks):
        raise GahpError(mismatched_ckpt, "checkpointing needs every disk on a shared filesystem (or vm_snapshot_disk)")
    cdrom_files = _cdrom_files(ad, working_dir, user)
    device_attr = "VMPARAM_Xen_CDROM_Device" if vm_type == "xen" else "VMPARAM_Kvm_CDROM_Device"
    cdrom_device = (ad.get_str(device_attr) or "").strip().lower() or default_cdrom_device(xen)

    ad.set_str("VMPARAM_VM_NAME", name)
    return VmJob(
        vm_type=vm_type,  # type: ignore[arg-type]
        name=name,
        working_dir=working_dir,
        memory_mib=memory,
        vcpus=vcpus,
        networking_type=networking_type,
        mac=mac,
        bridge_interface=settings.bridge_interface if networking_type == "bridge" else "",
        checkpoint=checkpoint,
        hardware_vt=hardware_vt,
        vnc_console=bool(ad.get_bool("JobVMVNCConsole")),
        no_output_vm=no_output_vm,
        disks=disks,
        xen=xen,
        transfer_intermediate=_split_list(ad.get_str("TransferIntermediate")),
        snapshot_disk=snapshot_disk,
        cdrom_files=cdrom_files,
        cdrom_device=cdrom_device if cdrom_files else "",
        owner_uid=user.uid if user else None,
        owner_gid=user.gid if user else None,
        ad_text=ad.print_sorted(),
    )


def _cdrom_files(ad: JobAd, working_dir: str, user: JobUser | None) -> tuple[str, ...]:
    """``VMPARAM_CDROM_Files``: transferred files from the working dir, others absolute."""
    files = []
    for name in _split_list(ad.get_str("VMPARAM_CDROM_Files")):
        path = _resolve_file(name, working_dir)
        if not os.path.isabs(path) or not can_access(path, user, directory=True):
            raise GahpError(errors.CANNOT_READ_CDROM_FILE, f"cannot read CD-ROM file {name!r}")
        files.append(path)
    return tuple(files)


def _resolve_file(path: str, working_dir: str) -> str:
    """A transferred kernel/initrd is used from the working dir (spec 4.3)."""
    local = os.path.join(working_dir, os.path.basename(path.rstrip("/")))
    if working_dir and os.path.exists(local):
        return local
    return path


def _boot_file(path: str, working_dir: str, user: JobUser | None, token: str, what: str) -> str:
    """A Xen kernel or initrd: the path *as written* must be readable (a relative
    one from the working dir, the gahp's cwd) before a transferred copy of the
    same name is used (xen_type.linux.cpp:1587-1619, spec 4.3)."""
    as_written = path if os.path.isabs(path) else os.path.join(working_dir, path)
    if not can_access(as_written, user):
        raise GahpError(token, f"cannot read the {what} {path!r} (checked as written, as the job user)")
    return _resolve_file(path, working_dir)


def _xen_boot(
    ad: JobAd, settings: Settings, working_dir: str, hardware_vt: bool, user: JobUser | None
) -> XenBoot:
    kernel = (ad.get_str("VMPARAM_Xen_Kernel") or "").strip()
    if not kernel:
        raise GahpError(errors.XEN_NO_KERNEL_PARAM, "VMPARAM_Xen_Kernel is missing")
    initrd = (ad.get_str("VMPARAM_Xen_Initrd") or "").strip()
    root = (ad.get_str("VMPARAM_Xen_Root") or "").strip()
    params = (ad.get_str("VMPARAM_Xen_Kernel_Params") or "").strip()
    lowered = kernel.lower()
    if lowered == "included":
        if not settings.xen_bootloader:
            raise GahpError(errors.CRITICAL, "XEN_BOOTLOADER is not configured")
        return XenBoot(kernel="included", bootloader=settings.xen_bootloader, kernel_params=params)
    if lowered == "vmx":
        if not hardware_vt:
            raise GahpError(errors.JOBCLASSAD_MISMATCHED_HARDWARE_VT, "xen_kernel = vmx needs JobVMHardwareVT")
        return XenBoot(kernel="vmx", kernel_params=params)
    kernel_path = _boot_file(kernel, working_dir, user, errors.XEN_KERNEL_NOT_FOUND, "kernel")
    if initrd:
        initrd = _boot_file(initrd, working_dir, user, errors.XEN_INITRD_NOT_FOUND, "initrd")
    if not root:
        raise GahpError(errors.XEN_NO_ROOT_DEVICE_PARAM, "VMPARAM_Xen_Root is required with a kernel path")
    return XenBoot(kernel=kernel_path, initrd=initrd, root=root, kernel_params=params)
