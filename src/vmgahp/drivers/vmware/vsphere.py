"""``VSphere``: the small vSphere client the gahp's VMware backend is built on.

One object per vCenter/ESXi endpoint, safe to share between threads. Every method
runs under a deadline (``timeout`` seconds, else the client's ``default_timeout``)
and raises only errors.py's ``VSphereError`` family. VMs are registered from a VMX
already on a datastore (``register``), never created or destroyed: ``unregister``
leaves every file in place (``Destroy_Task`` would delete the user's disks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from vmgahp.drivers.vmware import checkpoint, datastore, placement, specs
from vmgahp.drivers.vmware.errors import InvalidState, Secret
from vmgahp.drivers.vmware.placement import Placement
from vmgahp.drivers.vmware.session import Session
from vmgahp.drivers.vmware.tasks import run_task, wait_for
from vmgahp.drivers.vmware.transport import Deadline

POWERED_ON, POWERED_OFF, SUSPENDED = "poweredOn", "poweredOff", "suspended"
Timeout = float | Deadline | None  # seconds, or a Deadline shared with other calls


@dataclass(frozen=True)
class Vm:
    obj: Any  # vim.VirtualMachine
    name: str
    vmx: str  # "[datastore] folder/file.vmx"

    @property
    def moid(self) -> str:
        return self.obj._moId

    @property
    def folder(self) -> str:
        """The VM's folder as a datastore path: "[datastore] folder"."""
        return self.vmx.rsplit("/", 1)[0] if "/" in self.vmx else self.vmx.split("]")[0] + "]"


@dataclass(frozen=True)
class VmStatus:
    power_state: str  # poweredOn | poweredOff | suspended
    cpu_mhz: int  # summary.quickStats.overallCpuUsage
    guest_memory_mb: int  # summary.quickStats.guestMemoryUsage
    ip: str | None  # guest.ipAddress (needs VMware Tools in the guest)
    macs: tuple[str, ...]  # configured NIC MACs


@dataclass(frozen=True)
class Nic:
    mac: str
    address_type: str
    network: str | None  # standard port group name, or the distributed port group key
    kind: str  # adapter type, e.g. "VirtualE1000e"


@dataclass(frozen=True)
class Disk:
    file: str
    parent: str | None  # the base of a child (delta) disk
    controller_key: int
    unit: int | None


@dataclass(frozen=True)
class VmSettings:
    memory_mb: int
    cpus: int
    nics: tuple[Nic, ...]
    isos: tuple[str, ...]  # CD-ROM ISO backings
    disks: tuple[Disk, ...]
    extra_config: dict[str, str]


class VSphere:
    def __init__(self, session: Session, default_timeout: float = 120.0) -> None:
        self.session = session
        self.default_timeout = default_timeout

    @classmethod
    def connect(cls, host: str, user: str, password: Secret, *, port: int = 443, ca_file: str | None = None,
                thumbprint: str | None = None, timeout: float = 60.0,
                default_timeout: float = 120.0) -> "VSphere":  # fmt: skip
        """Log in. ``password`` as read from its file by the caller; TLS is always
        verified: against ``ca_file``, a pinned SHA-256 ``thumbprint``, or the system CAs."""
        session = Session.connect(host, user, password, port=port, ca_file=ca_file, thumbprint=thumbprint,
                                  timeout=timeout)  # fmt: skip
        return cls(session, default_timeout)

    def __repr__(self) -> str:
        return f"<VSphere {self.session!r}>"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "VSphere":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def deadline(self, timeout: float | Deadline | None) -> Deadline:
        """A Deadline passes through: one budget can span several calls."""
        if isinstance(timeout, Deadline):
            return timeout
        return Deadline(timeout if timeout is not None else self.default_timeout)

    # ------------------------------------------------------------ placement and files

    def placement(self, *, datacenter: str | None = None, datastore: str | None = None, pool: str | None = None,
                  host: str | None = None, folder: str | None = None,
                  timeout: Timeout = None) -> Placement:  # fmt: skip
        return placement.place(self.session, self.deadline(timeout), datacenter=datacenter, datastore=datastore,
                               pool=pool, host=host, folder=folder)  # fmt: skip

    def make_folder(self, where: Placement, folder: str, timeout: Timeout = None) -> None:
        datastore.make_folder(self.session, where, folder, self.deadline(timeout))

    def delete(self, where: Placement, path: str, timeout: Timeout = None) -> None:
        datastore.delete(self.session, where, path, self.deadline(timeout))

    def list_folder(self, where: Placement, folder: str, pattern: str = "*",
                    timeout: Timeout = None) -> list[datastore.DsFile]:  # fmt: skip
        return datastore.list_folder(self.session, where, folder, self.deadline(timeout), pattern)

    def upload(self, where: Placement, local: Path, remote: str, timeout: Timeout = None) -> int:
        return datastore.upload(self.session, where, Path(local), remote, self.deadline(timeout))

    def download(self, where: Placement, remote: str, local: Path, timeout: Timeout = None) -> int:
        return datastore.download(self.session, where, remote, Path(local), self.deadline(timeout))

    # ------------------------------------------------------------ VMs

    def register(self, where: Placement, vmx: str, name: str, timeout: Timeout = None) -> Vm:
        """Register the VMX at ``vmx`` (relative to the placement's datastore) as ``name``."""
        path = where.ds_path(vmx)
        obj = run_task(self.session, f"register {path} as {name!r}", self.deadline(timeout),
                       where.folder.RegisterVM_Task, path, name, False, where.pool, where.host)  # fmt: skip
        return Vm(obj, name, path)

    def find_vm(self, where: Placement, vmx: str, timeout: Timeout = None) -> Vm | None:
        """The VM registered from ``vmx``, if any (e.g. after a register that timed out)."""
        path = where.ds_path(vmx)
        deadline = self.deadline(timeout)
        index = self.session.content.searchIndex
        obj = self.session.invoke(f"find {path}", deadline, index.FindByDatastorePath, where.datacenter, path)
        if obj is None:
            return None
        return Vm(obj, self.session.props(obj, ["name"], deadline)["name"], path)

    def reconfigure(self, where: Placement, vm: Vm, spec: specs.VmSpec, timeout: Timeout = None) -> list[str]:
        """Apply ``spec``; returns the child disks made (datastore paths)."""
        deadline = self.deadline(timeout)
        what = f"reconfigure {vm.name}"
        network = placement.find_network(self.session, where, spec.network, deadline) if spec.network else None
        devices = self.session.props(vm.obj, ["config.hardware.device"], deadline, what).get(
            "config.hardware.device", []
        )
        config, children = specs.config_spec(spec, devices, network, vm.folder)
        run_task(self.session, what, deadline, vm.obj.ReconfigVM_Task, config)
        return children

    def power_on(self, vm: Vm, timeout: Timeout = None) -> None:
        run_task(self.session, f"power on {vm.name}", self.deadline(timeout), vm.obj.PowerOnVM_Task)

    def power_off(self, vm: Vm, timeout: Timeout = None) -> None:
        run_task(self.session, f"power off {vm.name}", self.deadline(timeout), vm.obj.PowerOffVM_Task)

    def suspend(self, vm: Vm, timeout: Timeout = None) -> None:
        run_task(self.session, f"suspend {vm.name}", self.deadline(timeout), vm.obj.SuspendVM_Task)

    def resume(self, vm: Vm, timeout: Timeout = None) -> None:
        """Power on a suspended VM: it goes on from its saved state (a cold boot is refused)."""
        deadline = self.deadline(timeout)
        state = self._power_state(vm, deadline)
        if state != SUSPENDED:
            raise InvalidState(f"resume {vm.name}: it is {state}, not suspended", fault="InvalidPowerState")
        run_task(self.session, f"resume {vm.name}", deadline, vm.obj.PowerOnVM_Task)

    def unregister(self, vm: Vm, timeout: Timeout = None) -> None:
        """Remove the VM from the inventory, keeping all its files."""
        self.session.invoke(f"unregister {vm.name}", self.deadline(timeout), vm.obj.UnregisterVM)

    def power_state(self, vm: Vm, timeout: Timeout = None) -> str:
        return self._power_state(vm, self.deadline(timeout))

    def _power_state(self, vm: Vm, deadline: Deadline) -> str:
        props = self.session.props(vm.obj, ["runtime.powerState"], deadline, f"state of {vm.name}")
        return str(props["runtime.powerState"])

    def wait_power_state(self, vm: Vm, states: str | Sequence[str], timeout: Timeout = None) -> str:
        """Wait (WaitForUpdatesEx) until the VM is in one of ``states``; TimedOut if not."""
        wanted = {states} if isinstance(states, str) else set(states)
        values = wait_for(self.session, vm.obj, ["runtime.powerState"],
                          lambda v: v.get("runtime.powerState") in wanted, self.deadline(timeout),
                          f"wait for {vm.name} to be {'/'.join(sorted(wanted))}")  # fmt: skip
        return str(values["runtime.powerState"])

    def status(self, vm: Vm, timeout: Timeout = None) -> VmStatus:
        paths = ["runtime.powerState", "summary.quickStats", "guest.ipAddress", "config.hardware.device"]
        props = self.session.props(vm.obj, paths, self.deadline(timeout), f"status of {vm.name}")
        stats = props.get("summary.quickStats")
        macs = tuple(d.macAddress for d in _nics(props.get("config.hardware.device", [])) if d.macAddress)
        return VmStatus(
            power_state=str(props["runtime.powerState"]),
            cpu_mhz=int(getattr(stats, "overallCpuUsage", 0) or 0),
            guest_memory_mb=int(getattr(stats, "guestMemoryUsage", 0) or 0),
            ip=props.get("guest.ipAddress") or None,
            macs=macs,
        )

    def settings(self, vm: Vm, timeout: Timeout = None) -> VmSettings:
        """The VM's configuration as the server has it (to check a reconfigure)."""
        from pyVmomi import vim

        paths = ["config.hardware.memoryMB", "config.hardware.numCPU", "config.hardware.device", "config.extraConfig"]
        props = self.session.props(vm.obj, paths, self.deadline(timeout), f"settings of {vm.name}")
        devices: list[Any] = list(props.get("config.hardware.device", []))  # the stubs' unions: read as sent
        nics = tuple(
            Nic(d.macAddress, d.addressType, getattr(d.backing, "deviceName", None)
                or getattr(getattr(d.backing, "port", None), "portgroupKey", None), type(d).__name__.split(".")[-1])
            for d in _nics(devices)
        )  # fmt: skip
        isos = tuple(d.backing.fileName for d in devices if isinstance(d, vim.vm.device.VirtualCdrom)
                     and isinstance(d.backing, vim.vm.device.VirtualCdrom.IsoBackingInfo))  # fmt: skip
        disks = tuple(_disk_of(d) for d in devices if isinstance(d, vim.vm.device.VirtualDisk))
        return VmSettings(
            memory_mb=int(props["config.hardware.memoryMB"]),
            cpus=int(props["config.hardware.numCPU"]),
            nics=nics,
            isos=isos,
            disks=disks,
            extra_config={o.key: o.value for o in props.get("config.extraConfig", [])},
        )

    # ------------------------------------------------------------ checkpoints

    def save_state(self, where: Placement, vm: Vm, local_dir: Path, timeout: Timeout = None) -> list[Path]:
        """Download a suspended (or off) VM's state files into ``local_dir``."""
        return checkpoint.save_state(self, where, vm, Path(local_dir), self.deadline(timeout))

    def restore(self, where: Placement, local_dir: Path, folder: str, vmx_name: str, name: str,
                timeout: Timeout = None) -> Vm:  # fmt: skip
        """Upload ``local_dir`` into a new datastore ``folder``, register, power on (resumes)."""
        return checkpoint.restore(self, where, Path(local_dir), folder, vmx_name, name, self.deadline(timeout))


def _nics(devices: Sequence[Any]) -> list[Any]:
    from pyVmomi import vim

    return [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]


def _disk_of(device: Any) -> Disk:
    """A VirtualDisk as the server has it (a file backing: the stubs allow none)."""
    parent = getattr(device.backing, "parent", None)
    return Disk(device.backing.fileName, getattr(parent, "fileName", None), device.controllerKey, device.unitNumber)
