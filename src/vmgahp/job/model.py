"""Job ClassAd -> a validated, typed VM description (pydantic).

:func:`build_job` runs the checks every VM type shares in the C++ order
(``parseCommonParamFromClassAd``, spec 4.3: memory, vCPUs, networking,
checkpoint, VM name, hardware VT, no-output), then hands the ad to the
driver's ``read_job`` for the VM-type part (disks, kernels, VMX files, each
type with its own tokens), so the first failure yields the token the starter
expects. Unknown attributes are ignored.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from vmgahp.errors import GahpError
from vmgahp.job.access import JobUser, can_access
from vmgahp.job.jobad import JobAd
from vmgahp.protocol import tokens

if TYPE_CHECKING:
    from vmgahp.drivers.base import Hypervisor
    from vmgahp.job.networking import NetworkPlan
    from vmgahp.settings import Settings

MIN_MEMORY_MIB = 32  # the C++ raises smaller requests to 32 MiB
CDROM_IMAGE = "vmgahp-cdrom.iso"  # the ISO vmgahp builds from VMPARAM_CDROM_Files (or vmgahp-cdrom.<n>.iso)


def is_cdrom_image(path: str, working_dir: str) -> bool:
    """``path`` is (or would be) one of the ISO images vmgahp builds itself."""
    name = os.path.basename(path)
    return (os.path.dirname(os.path.abspath(path)) == os.path.abspath(working_dir)
            and name.startswith("vmgahp-cdrom") and name.endswith(".iso"))


class Disk(BaseModel):
    """One disk of the VM, resolved and checked."""

    model_config = ConfigDict(frozen=True)

    path: str  # absolute, resolved
    device: str  # lower-cased, e.g. vda
    permission: str  # as given, trimmed
    format: str = ""  # lower-cased, "" when not given
    transferred: bool = False

    @property
    def writable(self) -> bool:
        return self.permission.lower() in ("w", "rw")

    @property
    def is_cdrom(self) -> bool:
        # By extension, not by substring as the C++ does ("my.isotope.img").
        return self.path.lower().endswith(".iso")


class VmJob(BaseModel):
    """Everything a driver needs to build and run the VM of one job."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    vm_type: str
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
    firmware: str = "bios"  # or "uefi" (VMPARAM_Firmware; the libvirt driver reads it)
    disks: tuple[Disk, ...] = ()
    extras: Any = None  # the driver's own model of the VM-type part (libvirt: Xen boot settings)
    snapshot_disk: bool = False  # writable disks run on copy-on-write layers
    cdrom_files: tuple[str, ...] = ()  # resolved files for the job's ISO image
    cdrom_device: str = ""  # target device of that ISO, e.g. hdc (the driver's choice)
    cdrom_built: str = ""  # the ISO vmgahp built for this run ("" when reused or none)
    owner_uid: int | None = None
    owner_gid: int | None = None
    ad_text: str = ""  # the ad as sorted Name = value lines (for a helper such as an XML script)

    @property
    def has_transferred_disk(self) -> bool:
        return any(d.transferred for d in self.disks)


def vm_name(ad: JobAd) -> str | None:
    """``<User with @ -> _>_<ClusterId>.<ProcId>`` (create_name_for_VM)."""
    user = ad.get_str("User")
    cluster = ad.get_int("ClusterId")
    proc = ad.get_int("ProcId")
    if not user or cluster is None or proc is None:
        return None
    return f"{user.replace('@', '_')}_{cluster}.{proc}"


def split_list(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(item.strip() for item in text.split(",") if item.strip())


def build_job(ad: JobAd, settings: Settings, network: NetworkPlan, user: JobUser | None,
              hypervisor: Hypervisor) -> VmJob:
    """Validate the ad for ``hypervisor``'s VM type; raise GahpError with the C++ token."""
    working_dir = ad.get_str("VM_WORKING_DIR") or ""

    # 1. memory
    memory = ad.get_int("JobVMMemory")
    if memory is None:
        memory = ad.get_int("RequestMemory")
    if memory is None:
        raise GahpError(tokens.JOBCLASSAD_NO_VM_MEMORY_PARAM, "neither JobVMMemory nor RequestMemory")
    if memory <= 0 or memory > settings.vm_memory:
        raise GahpError(
            tokens.JOBCLASSAD_TOO_MUCH_MEMORY_REQUEST,
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
            raise GahpError(tokens.JOBCLASSAD_MISMATCHED_NETWORKING, "networking is off on this host")
        wanted = (ad.get_str("JobVMNetworkingType") or "").strip().lower()
        if wanted and wanted not in network.types:
            raise GahpError(
                tokens.JOBCLASSAD_MISMATCHED_NETWORKING_TYPE,
                f"type {wanted!r} not in {','.join(network.types)}",
            )
        networking_type = wanted or network.default
        mac = (ad.get_str("JobVM_MACADDR") or "").strip()
    # 4. checkpoint flag
    checkpoint = bool(ad.get_bool("JobVMCheckpoint"))
    # 5. VM name
    name = vm_name(ad)
    if name is None:
        raise GahpError(tokens.CRITICAL, "the VM name needs User, ClusterId and ProcId")
    # 6. hardware VT
    hardware_vt = bool(ad.get_bool("JobVMHardwareVT"))
    if hardware_vt and not settings.hardware_vt:
        raise GahpError(tokens.JOBCLASSAD_MISMATCHED_HARDWARE_VT, "VM_HARDWARE_VT is off")
    # 7. no-output flag; 8. memory floor
    no_output_vm = bool(ad.get_bool("VMPARAM_No_Output_VM"))
    memory = max(memory, MIN_MEMORY_MIB)
    ad.set_str("VMPARAM_VM_NAME", name)

    job = VmJob(
        vm_type=hypervisor.vm_type,
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
        owner_uid=user.uid if user else None,
        owner_gid=user.gid if user else None,
    )
    # The VM-type part (the C++ KVM/Xen/VMware checks), then the CD-ROM inputs.
    job = hypervisor.read_job(ad, job, user)
    cdrom_files = _cdrom_files(ad, working_dir, user)
    return job.model_copy(update={
        "cdrom_files": cdrom_files,
        "cdrom_device": job.cdrom_device if cdrom_files else "",
        "ad_text": ad.print_sorted(),
    })


def _cdrom_files(ad: JobAd, working_dir: str, user: JobUser | None) -> tuple[str, ...]:
    """``VMPARAM_CDROM_Files``: transferred files from the working dir, others absolute."""
    files = []
    for name in split_list(ad.get_str("VMPARAM_CDROM_Files")):
        path = resolve_transferred(name, working_dir)
        if not os.path.isabs(path) or not can_access(path, user, directory=True):
            raise GahpError(tokens.CANNOT_READ_CDROM_FILE, f"cannot read CD-ROM file {name!r}")
        files.append(path)
    return tuple(files)


def resolve_transferred(path: str, working_dir: str) -> str:
    """A file of that base name in the working dir is the transferred copy."""
    local = os.path.join(working_dir, os.path.basename(path.rstrip("/")))
    if working_dir and os.path.exists(local):
        return local
    return path
