"""The reconfiguration a job's VM gets (``VmSpec``) as a vSphere ConfigSpec.

* memory and vCPUs;
* one NIC on a named port group (standard or distributed) with, optionally, a manual
  MAC (``addressType='manual'``): the VM's first NIC is edited, keeping its adapter
  type; further NICs are removed; a VM without one gets an E1000e;
* a CD-ROM backed by an ISO file on a datastore (the first CD-ROM, else a new one on
  a free IDE slot);
* ``extraConfig`` key/values;
* for each base disk, a new child (delta) disk whose ``parent`` is the base: the VM
  writes only the child, so the base - the user's disk, possibly shared by several
  jobs - is never written. A disk device already backed by the base (the VMX attached
  it) is replaced on the same controller slot, without deleting its file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Mapping, Sequence

from vmgahp.drivers.vmware.placement import Network

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
SCSI_UNITS = [u for u in range(16) if u != 7]  # unit 7 is the controller itself
IDE_UNITS = [0, 1]
CHILD_SUFFIX = "-vmgahp"


@dataclass(frozen=True)
class VmSpec:
    memory_mb: int | None = None
    cpus: int | None = None
    network: str | None = None  # port group name
    mac: str | None = None  # "00:50:56:xx:xx:xx"; set with addressType manual
    iso: str | None = None  # "[datastore] folder/file.iso"
    extra_config: Mapping[str, str] = field(default_factory=dict)
    base_disks: Sequence[str] = ()  # "[datastore] folder/disk.vmdk", each gets a child disk

    def __post_init__(self) -> None:
        if self.memory_mb is not None and self.memory_mb <= 0:
            raise ValueError(f"memory_mb must be positive, not {self.memory_mb}")
        if self.cpus is not None and self.cpus <= 0:
            raise ValueError(f"cpus must be positive, not {self.cpus}")
        if self.mac is not None:
            mac = self.mac.lower()
            if not _MAC.match(mac):
                raise ValueError(f"{self.mac!r} is not a MAC address (xx:xx:xx:xx:xx:xx)")
            object.__setattr__(self, "mac", mac)
        for path in [*self.base_disks, *([self.iso] if self.iso else [])]:
            split_ds_path(path)


def split_ds_path(path: str) -> tuple[str, str]:
    """'[ds] a/b.vmdk' -> ('ds', 'a/b.vmdk')."""
    found = re.fullmatch(r"\[([^\]]+)\] ?(.*)", path)
    if not found:
        raise ValueError(f"{path!r} is not a datastore path ('[datastore] folder/file')")
    return found.group(1), found.group(2)


def child_disk_path(vm_dir: str, base: str) -> str:
    """Where the child of ``base`` goes: the VM's folder, named after the base."""
    return f"{vm_dir}/{PurePosixPath(split_ds_path(base)[1]).stem}{CHILD_SUFFIX}.vmdk"


class _Keys:
    """Temporary (negative) device keys; the server assigns real ones."""

    def __init__(self) -> None:
        self._next = -100

    def __call__(self) -> int:
        self._next -= 1
        return self._next


def config_spec(spec: VmSpec, devices: Sequence[Any], network: Network | None, vm_dir: str) -> tuple[Any, list[str]]:
    """(vim.vm.ConfigSpec, child disk paths) turning a VM with ``devices`` into ``spec``.

    ``vm_dir`` is the VM's folder as a datastore path ("[ds] job-7").
    """
    from pyVmomi import vim

    config: Any = vim.vm.ConfigSpec()  # pyVmomi's stubs type unset fields as None
    if spec.memory_mb is not None:
        config.memoryMB = spec.memory_mb
    if spec.cpus is not None:
        config.numCPUs = spec.cpus
    if spec.extra_config:
        config.extraConfig = [vim.option.OptionValue(key=k, value=str(v)) for k, v in spec.extra_config.items()]
    keys = _Keys()
    changes: list[Any] = []
    changes += _nic_changes(spec, devices, network, keys)
    changes += _cdrom_changes(spec, devices, keys)
    disk_changes, children = _disk_changes(spec, devices, vm_dir, keys)
    changes += disk_changes
    config.deviceChange = changes
    return config, children


def _change(operation: str, device: Any, file_operation: str | None = None) -> Any:
    from pyVmomi import vim

    change: Any = vim.vm.device.VirtualDeviceSpec(operation=operation, device=device)
    if file_operation:
        change.fileOperation = file_operation
    return change


def _connected() -> Any:
    from pyVmomi import vim

    return vim.vm.device.VirtualDevice.ConnectInfo(startConnected=True, connected=True, allowGuestControl=True)


def _nic_changes(spec: VmSpec, devices: Sequence[Any], network: Network | None, keys: _Keys) -> list[Any]:
    from pyVmomi import vim

    if network is None and spec.mac is None:
        return []
    nics = [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    if not nics and network is None:
        raise ValueError("a MAC address needs a network for the VM's new NIC")
    changes = [_change("remove", extra) for extra in nics[1:]]  # the job gets one NIC
    if nics:
        nic, operation = nics[0], "edit"
    else:
        nic, operation = vim.vm.device.VirtualE1000e(key=keys()), "add"
    if network is not None:
        if network.switch_uuid:
            port = vim.dvs.PortConnection(switchUuid=network.switch_uuid, portgroupKey=network.portgroup_key)
            nic.backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
        else:
            nic.backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=network.name,
                                                                               network=network.obj)  # fmt: skip
    if spec.mac is not None:
        nic.addressType = "manual"
        nic.macAddress = spec.mac
    nic.connectable = _connected()
    return changes + [_change(operation, nic)]


def _cdrom_changes(spec: VmSpec, devices: Sequence[Any], keys: _Keys) -> list[Any]:
    from pyVmomi import vim

    if not spec.iso:
        return []
    backing = vim.vm.device.VirtualCdrom.IsoBackingInfo(fileName=spec.iso)
    cdroms = [d for d in devices if isinstance(d, vim.vm.device.VirtualCdrom)]
    if cdroms:
        cdrom = cdroms[0]
        cdrom.backing, cdrom.connectable = backing, _connected()
        return [_change("edit", cdrom)]
    ide = [d for d in devices if isinstance(d, vim.vm.device.VirtualIDEController)]
    for controller in ide:
        used = {d.unitNumber for d in devices if d.controllerKey == controller.key}
        free = [u for u in IDE_UNITS if u not in used]
        if free:
            cdrom = vim.vm.device.VirtualCdrom(key=keys(), controllerKey=controller.key, unitNumber=free[0],
                                               backing=backing, connectable=_connected())  # fmt: skip
            return [_change("add", cdrom)]
    raise ValueError("the VM has no free IDE slot for a CD-ROM")


def _disk_changes(spec: VmSpec, devices: Sequence[Any], vm_dir: str, keys: _Keys) -> tuple[list[Any], list[str]]:
    from pyVmomi import vim

    changes: list[Any] = []
    children: list[str] = []
    taken = {(d.controllerKey, d.unitNumber) for d in devices if d.unitNumber is not None}
    controllers = [d.key for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)]
    disks = [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]

    def free_slot() -> tuple[int, int]:
        for key in controllers:
            for unit in SCSI_UNITS:
                if (key, unit) not in taken:
                    return key, unit
        # No SCSI controller, or all full: add an LSI Logic one (drivers in every guest).
        buses = {d.busNumber for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)}
        free_buses = set(range(4)) - buses - {c.device.busNumber for c in changes if _is_scsi(c)}
        if not free_buses:
            raise ValueError("no free SCSI slot for another disk (4 controllers, all full)")
        bus = min(free_buses)
        controller = vim.vm.device.VirtualLsiLogicController(key=keys(), busNumber=bus, sharedBus="noSharing")
        changes.append(_change("add", controller))
        controllers.append(controller.key)
        return free_slot()

    for base in spec.base_disks:
        attached = next((d for d in disks if getattr(d.backing, "fileName", None) == base), None)
        if attached is not None:
            changes.append(_change("remove", attached))  # no fileOperation: the base file stays
            slot, capacity = (attached.controllerKey, attached.unitNumber), attached.capacityInKB
        else:
            slot, capacity = free_slot(), 0  # vcsim: registered VMs have no disks from the VMX
        taken.add(slot)
        child = child_disk_path(vm_dir, base)
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=child, diskMode="persistent",
            parent=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=base, diskMode="persistent"),
        )  # fmt: skip
        disk = vim.vm.device.VirtualDisk(key=keys(), controllerKey=slot[0], unitNumber=slot[1],
                                         capacityInKB=capacity or 0, backing=backing)  # fmt: skip
        changes.append(_change("add", disk, "create"))
        children.append(child)
    return changes, children


def _is_scsi(change: Any) -> bool:
    from pyVmomi import vim

    return isinstance(change.device, vim.vm.device.VirtualSCSIController)
