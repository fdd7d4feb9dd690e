"""One job's VM on vSphere: the :class:`Domain` of the VMware backend.

The VM lives in a datastore folder of its own (``vmgahp-<name>-<hex>``) that
vmgahp made at START and is the only thing it ever deletes: the VM is
unregistered first, never ``Destroy_Task``-ed (that deletes every disk it has
attached). Ending a VM (:meth:`VMwareDomain.end`) is power off, unregister,
bring the changed disks - the child disks, or the transferred disks
themselves without snapshots - back into the working dir unless there is to
be no output, then delete the folder.

vSphere has no pause: :meth:`pause` fails and the backend declares no
``PAUSE`` capability, so SOFT_SUSPEND is a hard suspend (the C++ fallback) and
STATUS says ``Suspended`` for both. :meth:`save` suspends to the datastore,
downloads the VM's state files into the working dir under the staging
suffix and a ``vmgahp-vmware.`` prefix (the VM's own ``job.vmx`` would
otherwise replace the job's input VMX), then ends the VM without output.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from vmgahp import log
from vmgahp.drivers.base import Domain, DomainInfo, DomainState, HostError, HypervisorError, SavedState
from vmgahp.drivers.vmware import checkpoint
from vmgahp.drivers.vmware.errors import InvalidState, NotFound, VSphereError
from vmgahp.drivers.vmware.specs import split_ds_path
from vmgahp.drivers.vmware.transport import Deadline
from vmgahp.drivers.vmware.vsphere import POWERED_OFF, POWERED_ON, SUSPENDED, Vm
from vmgahp.job.workdir import give_to

if TYPE_CHECKING:
    from vmgahp.drivers.vmware.driver import VMwareHypervisor
    from vmgahp.job.model import VmJob

STATE_PREFIX = "vmgahp-vmware."  # local names of downloaded state files
CLEANUP_SECONDS = 15.0  # for the undo of a failed operation: the main deadline may be spent
_STATES = {POWERED_ON: DomainState.RUNNING, SUSPENDED: DomainState.PAUSED, POWERED_OFF: DomainState.SHUTOFF}


class VMwareDomain(Domain):
    def __init__(self, hv: VMwareHypervisor, job: VmJob | None, vm: Vm, folder: str,
                 children: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.name = vm.name
        self.hv, self.job, self.vm = hv, job, vm
        self.folder = folder  # relative to the placement's datastore
        self.children = children  # datastore paths of the child disks
        self.gone = False
        self._lock = threading.Lock()
        self._cpu_ns = 0.0  # integrated from quick stats: vSphere reports MHz, not CPU time
        self._sampled: float | None = None
        self._core_mhz: int | None = None

    def __repr__(self) -> str:
        return f"VMwareDomain({self.name!r}, folder={self.folder!r})"

    # ---------------------------------------------------------------- state
    def info(self) -> DomainInfo:
        if self.gone:
            return DomainInfo(DomainState.GONE)
        client, _ = self.hv.connection()
        deadline = self.hv.deadline()
        try:
            status = client.status(self.vm, deadline)
        except NotFound:
            return DomainInfo(DomainState.GONE)  # unregistered behind our back: it ended
        except VSphereError as exc:
            raise self.hv.failure(exc, f"status of {self.name}") from None
        state = _STATES.get(status.power_state, DomainState.SHUTOFF)
        cpu_ns = self._integrate(status.cpu_mhz if state is DomainState.RUNNING else 0, deadline)
        memory = self.job.memory_mib * 1024 if self.job else 0
        return DomainInfo(state, cpu_time_ns=int(cpu_ns), memory_kib=memory, max_memory_kib=memory,
                          vcpus=self.job.vcpus if self.job else 1, mac=status.macs[0] if status.macs else "",
                          ip=status.ip or "")  # fmt: skip

    def _integrate(self, mhz: int, deadline: Deadline) -> float:
        """CPU time from ``overallCpuUsage`` (MHz used now) over the time since the
        last sample, in units of one core of the VM's host."""
        now = time.monotonic()
        with self._lock:
            if mhz and self._core_mhz is None:
                self._core_mhz = self._host_core_mhz(deadline)
            if self._sampled is not None and mhz and self._core_mhz:
                self._cpu_ns += (now - self._sampled) * 1e9 * mhz / self._core_mhz
            self._sampled = now
            return self._cpu_ns

    def _host_core_mhz(self, deadline: Deadline) -> int:
        session = self.hv.connection()[0].session
        try:
            host = session.props(self.vm.obj, ["runtime.host"], deadline).get("runtime.host")
            return int(session.props(host, ["summary.hardware.cpuMhz"], deadline)["summary.hardware.cpuMhz"]) or 0
        except (VSphereError, KeyError, TypeError, ValueError):
            return 0

    def pid(self) -> int:
        return 0  # no host process of ours: the VM runs on an ESXi host

    # ------------------------------------------------------------ pause
    def pause(self) -> None:
        raise HostError("vSphere has no pause (SOFT_SUSPEND suspends to the datastore instead)")

    def unpause(self) -> None:
        """A VM left suspended on the datastore (a save that failed after the
        suspend) is powered on again: it resumes."""
        if self.gone:
            raise HostError(f"unpause: {self.name} is no longer registered")
        client, _ = self.hv.connection()
        deadline = self.hv.deadline()
        try:
            if client.power_state(self.vm, deadline) == SUSPENDED:
                client.resume(self.vm, deadline)
        except VSphereError as exc:
            raise self.hv.failure(exc, f"resume of {self.name}") from None

    # ------------------------------------------------------------- save
    def save(self, working_dir: Path, suffix: str) -> SavedState:
        if self.gone:
            raise HostError(f"save: {self.name} is no longer registered")
        client, where = self.hv.connection()
        deadline = self.hv.deadline()
        written: list[Path] = []
        try:
            if client.power_state(self.vm, deadline) != SUSPENDED:
                client.suspend(self.vm, deadline)
            entries = checkpoint.state_files(client, where, self.vm, deadline)
            names = [entry.name for entry in entries]
            # The child disks this gahp made, also when the server's device list
            # does not show them (vcsim: a registered VM has no disks from its VMX).
            names += [n for n in self._child_files(client.list_folder(where, self.folder, timeout=deadline))
                      if n not in names]
            if self.job is not None and not self.job.snapshot_disk:
                names += [n for n in self._uploaded_disks() if n not in names]  # the VM wrote the disks themselves
            vmx = PurePosixPath(split_ds_path(self.vm.vmx)[1]).name
            names.sort(key=lambda n: n != vmx)  # the VMX first: the main file of the state
            for name in names:
                target = Path(working_dir) / f"{STATE_PREFIX}{name}{suffix}"
                written.append(target)
                client.download(where, f"{self.folder}/{name}", target, deadline)
        except VSphereError as exc:
            for path in written:
                path.unlink(missing_ok=True)
            raise self.hv.failure(exc, f"save of {self.name}") from None
        log.get().info("vsphere_saved", name=self.name, files=names)
        try:
            self.end(output=False)
        except HypervisorError as exc:  # the state is safe here; what is left there is only a leftover
            log.get().warning("vsphere_cleanup_incomplete", name=self.name, folder=self.folder, detail=exc.message)
        local = tuple(f"{STATE_PREFIX}{n}" for n in names)
        record = {"folder": self.folder, "vmx": vmx, "names": {f"{STATE_PREFIX}{n}": n for n in names},
                  "snapshot": bool(self.job.snapshot_disk) if self.job else True}
        return SavedState(local, (), record)

    def _child_files(self, listing: list) -> list[str]:
        """The child disks' files in a folder listing: descriptor and extents."""
        stems = [PurePosixPath(split_ds_path(c)[1]).stem for c in self.children]
        return [e.name for e in listing if not e.folder and e.name.endswith(".vmdk")
                and any(e.name == f"{s}.vmdk" or e.name.startswith(f"{s}-") for s in stems)]

    def _uploaded_disks(self) -> list[str]:
        extras = self.job.extras if self.job else None
        return [Path(p).name for p in (extras.uploads if extras else ()) if p.lower().endswith(".vmdk")]

    # --------------------------------------------------------------- end
    def shutdown(self, grace_seconds: float) -> None:
        """The guest's own shutdown (needs VMware Tools) for up to the grace,
        then power off; the changed disks come back as output."""
        if self.gone:
            return
        client, _ = self.hv.connection()
        deadline = Deadline(max(0.1, grace_seconds))
        try:
            if client.power_state(self.vm, deadline) == POWERED_ON:
                client.session.invoke(f"shutdown of {self.name}", deadline, self.vm.obj.ShutdownGuest)
                client.wait_power_state(self.vm, POWERED_OFF, timeout=deadline)
        except VSphereError as exc:
            log.get().info("vsphere_shutdown_guest", name=self.name, detail=str(exc), fallback="power off")
        self.end(output=True)

    def destroy(self) -> None:
        self.end(output=False)

    def end(self, output: bool) -> None:
        """Power off, unregister, bring the changed disks back (``output``, and
        not ``vm_no_output_vm``), delete vmgahp's folder. Idempotent."""
        with self._lock:
            if self.gone:
                return
            self.gone = True
        client, where = self.hv.connection()
        deadline = self.hv.deadline()
        try:
            try:
                if client.power_state(self.vm, deadline) != POWERED_OFF:
                    client.power_off(self.vm, deadline)
            except InvalidState:
                pass  # it went off meanwhile
            except NotFound:
                pass  # unregistered already
            with contextlib.suppress(NotFound):
                client.unregister(self.vm, deadline)
            if output and self.job is not None and not self.job.no_output_vm:
                self._bring_back(deadline)
            client.delete(where, self.folder, deadline)
        except VSphereError as exc:
            raise self.hv.failure(exc, f"end of {self.name}") from None
        finally:
            self.hv.forget(self.name)
        log.get().info("vsphere_vm_ended", name=self.name, folder=self.folder, output=output)

    def _bring_back(self, deadline: Deadline) -> None:
        """The child disks (descriptor and extents), else the transferred disks."""
        client, where = self.hv.connection()
        assert self.job is not None
        work = Path(self.job.working_dir)
        if self.job.snapshot_disk:
            names = self._child_files(client.list_folder(where, self.folder, timeout=deadline))
        else:
            extras = self.job.extras
            names = [Path(p).name for p in extras.uploads
                     if p.lower().endswith(".vmdk") and Path(p).parent == work]
        for name in names:
            client.download(where, f"{self.folder}/{name}", work / name, deadline)
            give_to(work / name, self.job.owner_uid, self.job.owner_gid)
        log.get().info("vsphere_output", name=self.name, files=names)
