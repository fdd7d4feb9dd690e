"""The VMware part of a job ad, read as the old backend read it (spec 7).

``VMwareType::CreateConfigFile`` order: ``VMPARAM_VMware_Transfer`` (default
false), ``VMPARAM_VMware_SnapshotDisk`` (default true), ``VMPARAM_VMware_Dir``,
``VMPARAM_VMware_VMX_File`` (required: ``NO_VMWARE_VMX_PARAM``),
``VMPARAM_VMware_VMDK_Files``; then the VMX in the working directory must be
readable (``VMWARE_VMX_NOT_FOUND``) and a disk that was not transferred must be
readable in ``VMPARAM_VMware_Dir`` (``VMWARE_VMX_ERROR``). Without transfer the
disks are shared, so snapshot (child) disks are forced, as the C++ did.

vSphere cannot open the execute node's files: every file is uploaded to the
job's datastore folder at START - the transferred ones from the working
directory, the shared ones from ``VMPARAM_VMware_Dir``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vmgahp.errors import GahpError
from vmgahp.job.access import JobUser, can_access
from vmgahp.job.model import Disk, split_list
from vmgahp.protocol import tokens

if TYPE_CHECKING:
    from vmgahp.job.jobad import JobAd
    from vmgahp.job.model import VmJob

# VMware's range for manually set MACs (vmware_type.cpp's comment on ethernet0.address).
MAC_LOW, MAC_HIGH = 0x005056000000, 0x0050563FFFFF
_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
# Extents of a disk (not descriptors): flat, sparse slices, deltas.
_EXTENT = re.compile(r"-(flat|delta|sesparse|ctk|s\d{3}|f\d{3})\.vmdk$", re.IGNORECASE)
_FILE_LINE = re.compile(r'^\s*([A-Za-z]+\d+:\d+)\.fileName\s*=\s*"([^"]*)"', re.IGNORECASE)
# What a VM directory holds besides the VMX and disks that a host reads at register.
SIDE_SUFFIXES = (".nvram", ".vmxf", ".vmsd", ".log")


@dataclass(frozen=True)
class VMwareJob:
    """The VM-type part of :class:`VmJob` (its ``extras``)."""

    vmx: str  # absolute path of the VMX in the working dir
    transfer: bool
    snapshot_disk: bool
    vmware_dir: str
    uploads: tuple[str, ...]  # absolute local paths, uploaded by base name
    base_disks: tuple[str, ...]  # base names of the disk descriptors (each gets a child when snapshotting)


def check_mac(mac: str) -> str:
    """The MAC in lower case; CRITICAL outside VMware's manual range (the old
    backend wrote it into the VMX unchecked and VMware refused to power on)."""
    if not _MAC.match(mac):
        raise GahpError(tokens.CRITICAL, f"JobVM_MACADDR {mac!r} is not a MAC address (xx:xx:xx:xx:xx:xx)")
    value = int(mac.replace(":", ""), 16)
    if not MAC_LOW <= value <= MAC_HIGH:
        raise GahpError(tokens.CRITICAL, f"JobVM_MACADDR {mac} is outside VMware's range for manual MACs "
                                         "(00:50:56:00:00:00 - 00:50:56:3f:ff:ff)")
    return mac.lower()


def vmx_disks(text: str) -> list[str]:
    """The ``.vmdk`` files a VMX attaches (``scsi0:0.fileName = "x.vmdk"``)."""
    found = []
    for line in text.splitlines():
        match = _FILE_LINE.match(line)
        if match and match.group(2).lower().endswith(".vmdk"):
            found.append(match.group(2))
    return found


def read_job(ad: JobAd, job: VmJob, user: JobUser | None) -> VmJob:
    working_dir = job.working_dir
    transfer = bool(ad.get_bool("VMPARAM_VMware_Transfer"))
    snapshot = ad.get_bool("VMPARAM_VMware_SnapshotDisk")
    snapshot = True if snapshot is None else snapshot
    vmware_dir = (ad.get_str("VMPARAM_VMware_Dir") or "").strip()
    vmx_name = ad.get_str("VMPARAM_VMware_VMX_File")
    if vmx_name is None or not vmx_name.strip():
        raise GahpError(tokens.NO_VMWARE_VMX_PARAM, "VMPARAM_VMware_VMX_File is missing")
    vmx_name = os.path.basename(vmx_name.strip())
    vmdk_names = [os.path.basename(n) for n in split_list(ad.get_str("VMPARAM_VMware_VMDK_Files"))]
    if not transfer:
        snapshot = True  # shared disks are never written: the C++ always snapshotted them
    vmx = os.path.join(working_dir, vmx_name)
    try:
        if not can_access(vmx, user):
            raise OSError("not readable by the job user")
        with open(vmx, encoding="utf-8", errors="replace") as handle:
            vmx_text = handle.read()
    except OSError as exc:
        raise GahpError(tokens.VMWARE_VMX_NOT_FOUND, f"cannot read {vmx_name} in the working directory: "
                                                    f"{getattr(exc, 'strerror', None) or exc}") from None
    attached = [os.path.basename(n) for n in vmx_disks(vmx_text)]
    names = list(dict.fromkeys(vmdk_names + attached))
    disks: list[Disk] = []
    uploads = [vmx]
    for name in names:
        local = os.path.join(working_dir, name)
        if transfer or os.path.exists(local):
            path, transferred = local, True
        elif vmware_dir:
            path, transferred = os.path.join(vmware_dir, name), False
        else:
            raise GahpError(tokens.VMWARE_VMX_ERROR, f"{name} was not transferred and VMPARAM_VMware_Dir is not set")
        if not can_access(path, user):
            raise GahpError(tokens.VMWARE_VMX_ERROR, f"cannot read the disk {path} (as the job user)")
        uploads.append(path)
        if not _EXTENT.search(name):
            disks.append(Disk(path=path, device=f"disk{len(disks)}", permission="w", format="vmdk",
                              transferred=transferred))
    for entry in sorted(os.listdir(working_dir)):
        # Not vmgahp's own files (a checkpoint's state files are vmgahp-vmware.*).
        if entry.lower().endswith(SIDE_SUFFIXES) and entry != vmx_name and not entry.startswith("vmgahp-"):
            uploads.append(os.path.join(working_dir, entry))
    extras = VMwareJob(vmx=vmx, transfer=transfer, snapshot_disk=snapshot, vmware_dir=vmware_dir,
                       uploads=tuple(dict.fromkeys(uploads)),
                       base_disks=tuple(os.path.basename(d.path) for d in disks))
    mac = check_mac(job.mac) if job.mac else ""
    return job.model_copy(update={"disks": tuple(disks), "extras": extras, "snapshot_disk": snapshot,
                                  "cdrom_device": "ide", "mac": mac})
