"""A suspended VM's state out of the datastore, and back in.

``save_state`` downloads what a suspended VM is made of besides its base disks: the
``.vmx`` (and ``.vmxf``/``.vmsd``), ``.nvram``, the suspend files ``.vmss``/``.vmem``
(``.vmsn`` of snapshots) and the child disks written since the start (descriptor
and extents: "<stem>-vmgahp.vmdk", "<stem>-vmgahp-delta.vmdk", ...). Logs, locks and
swap files stay behind: the server makes them anew. ``restore`` is the reverse:
upload into a new folder, register, power on - a VM with a ``.vmss`` resumes.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from vmgahp.drivers.vmware import datastore
from vmgahp.drivers.vmware.datastore import DsFile
from vmgahp.drivers.vmware.errors import InvalidState, VSphereError
from vmgahp.drivers.vmware.placement import Placement
from vmgahp.drivers.vmware.specs import split_ds_path
from vmgahp.drivers.vmware.transport import Deadline

if TYPE_CHECKING:
    from vmgahp.drivers.vmware.vsphere import Vm, VSphere

STATE_SUFFIXES = frozenset({".vmx", ".vmxf", ".vmsd", ".nvram", ".vmss", ".vmem", ".vmsn"})


def _vm_folder(where: Placement, vm: "Vm") -> str:
    ds, folder = split_ds_path(vm.folder)
    if ds != where.datastore_name:
        raise VSphereError(f"{vm.name} lives on datastore {ds!r}, not the placement's {where.datastore_name!r}")
    return folder


def state_files(vs: "VSphere", where: Placement, vm: "Vm", deadline: Deadline) -> list[DsFile]:
    """The files ``save_state`` takes from the VM's folder."""
    folder = _vm_folder(where, vm)
    settings = vs.settings(vm, deadline)
    stems = []
    for disk in settings.disks:
        ds, path = split_ds_path(disk.file)
        if disk.parent and ds == where.datastore_name and str(PurePosixPath(path).parent) == folder:
            stems.append(PurePosixPath(path).stem)

    def wanted(entry: DsFile) -> bool:
        if entry.folder:
            return False
        if PurePosixPath(entry.name).suffix in STATE_SUFFIXES:
            return True
        return entry.name.endswith(".vmdk") and any(
            entry.name == f"{stem}.vmdk" or entry.name.startswith(f"{stem}-") for stem in stems
        )

    return [entry for entry in vs.list_folder(where, folder, timeout=deadline) if wanted(entry)]


def save_state(vs: "VSphere", where: Placement, vm: "Vm", local_dir: Path, deadline: Deadline) -> list[Path]:
    """Download the state files of a suspended or powered-off ``vm`` into ``local_dir``."""
    state = vs.power_state(vm, deadline)
    if state not in ("suspended", "poweredOff"):
        raise InvalidState(f"save the state of {vm.name}: it is {state}; suspend it first", fault="InvalidPowerState")
    folder = _vm_folder(where, vm)
    local_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for entry in state_files(vs, where, vm, deadline):
        target = local_dir / entry.name
        datastore.download(vs.session, where, f"{folder}/{entry.name}", target, deadline)
        saved.append(target)
    return saved


def restore(vs: "VSphere", where: Placement, local_dir: Path, folder: str, vmx_name: str, name: str,
            deadline: Deadline) -> "Vm":  # fmt: skip
    """Upload every file of ``local_dir`` into a new ``folder``, register ``vmx_name``
    from it as ``name`` and power it on (it resumes when a ``.vmss`` came along)."""
    files = sorted(p for p in local_dir.iterdir() if p.is_file())
    if vmx_name not in {p.name for p in files}:
        raise VSphereError(f"restore {name!r}: {vmx_name} is not in {local_dir}")
    datastore.make_folder(vs.session, where, folder, deadline)
    for path in files:
        datastore.upload(vs.session, where, path, f"{folder}/{path.name}", deadline)
    vm = vs.register(where, f"{folder}/{vmx_name}", name, timeout=deadline)
    vs.power_on(vm, timeout=deadline)
    return vm
