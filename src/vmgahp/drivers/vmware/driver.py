"""VMware vSphere through pyVmomi: the :class:`Hypervisor` of ``vm_type = vmware``.

One :class:`VMwareHypervisor` per gahp holds one logged-in vSphere session
(made at the first START, or by the host check) and the VMs it started, by
name. START uploads the job's files into a datastore folder of its own,
registers the VMX, always reconfigures it with the job's memory, vCPUs, NIC
(port group from ``VMWARE_NAT_PORTGROUP`` / ``VMWARE_BRIDGE_PORTGROUP``,
manual MAC), CD-ROM and ``extraConfig`` - plus a child disk over each base
disk when snapshotting - and powers it on. A restore uploads the base files
and the saved state into a folder, registers and powers on: the VM resumes
from its ``.vmss``. pyVmomi is imported by the vSphere layer's functions only,
so importing this module is cheap too: pyVmomi loads with the first login, when
the first job ad arrives (``network_plan``, the runtime's warm-up) or at the
probe. Every vSphere call runs under one
deadline per operation (``VMWARE_CALL_TIMEOUT``, within the gahp's own).
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from vmgahp import log
from vmgahp.drivers.base import Capability, HostError, Hypervisor, HypervisorError, JobImageError, SavedState
from vmgahp.drivers.vmware import host, job_ad
from vmgahp.drivers.vmware.domain import CLEANUP_SECONDS, VMwareDomain
from vmgahp.drivers.vmware.errors import AlreadyExists, VSphereError
from vmgahp.drivers.vmware.placement import Placement
from vmgahp.drivers.vmware.settings import VMwareSettings
from vmgahp.drivers.vmware.specs import VmSpec
from vmgahp.drivers.vmware.transport import Deadline
from vmgahp.drivers.vmware.vsphere import POWERED_OFF, Vm, VSphere
from vmgahp.job.networking import NetworkPlan, plan_networking
from vmgahp.settings import ConfigError

if TYPE_CHECKING:
    from vmgahp.job.access import JobUser
    from vmgahp.job.jobad import JobAd
    from vmgahp.job.model import VmJob
    from vmgahp.settings import Settings

FOLDER_PREFIX = "vmgahp-"  # the only datastore folders vmgahp ever deletes
# Faults that say the job's files are at fault, not the host.
_JOB_FAULTS = frozenset({"InvalidVmConfig", "InvalidDeviceSpec", "FileNotFound", "InvalidDiskFormat",
                         "InvalidDatastorePath", "FileFault"})
DEADLINE_MARGIN = 5.0  # the driver's deadline ends before the gahp's: a token of ours, not a timeout


def folder_name(vm_name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in vm_name)
    return f"{FOLDER_PREFIX}{safe}-{secrets.token_hex(4)}"


class VMwareHypervisor(Hypervisor):
    capabilities = Capability.SAVE | Capability.CHECKPOINT | Capability.NETWORK_NAT | Capability.NETWORK_BRIDGE

    def __init__(self, settings: Settings, vm_type: str) -> None:
        if vm_type != "vmware":
            raise ValueError(f"the VMware driver runs vmware VMs, not {vm_type!r}")
        super().__init__(settings, vm_type)
        self.cfg = VMwareSettings.from_knobs(settings.driver_knobs)
        for warning in self.cfg.warnings:
            log.get().warning("config_value_ignored", detail=warning)
        self._lock = threading.Lock()
        self._client: VSphere | None = None
        self._where: Placement | None = None
        self._vms: dict[str, VMwareDomain] = {}
        self._absent: set[str] = set()  # networking types whose port group the server lacks
        self._warmed = False  # network_plan has tried to connect

    def __repr__(self) -> str:
        return f"VMwareHypervisor({self.cfg.url!r})"

    # ------------------------------------------------------------ connection
    def deadline(self) -> Deadline:
        return Deadline(max(1.0, min(self.cfg.call_timeout, self.settings.call_timeout - DEADLINE_MARGIN)))

    def connection(self, deadline: Deadline | None = None) -> tuple[VSphere, Placement]:
        """The session and placement, logged in at the first use."""
        with self._lock:
            if self._client is None:
                try:
                    self._client, self._where = host.connect(self.cfg, deadline or self.deadline())
                except ConfigError as exc:
                    raise HostError(str(exc)) from None
                except VSphereError as exc:
                    raise self.failure(exc, f"connection to {self.cfg.url}") from None
            assert self._where is not None
            return self._client, self._where

    def failure(self, exc: BaseException, what: str) -> HypervisorError:
        """A vSphere failure as the contract's kinds: the job's files, or the host."""
        text = str(exc) if str(exc).startswith(what) else f"{what}: {exc}"
        if isinstance(exc, VSphereError) and exc.fault in _JOB_FAULTS:
            return JobImageError(text)
        return HostError(text)

    def forget(self, name: str) -> None:
        with self._lock:
            self._vms.pop(name, None)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # ------------------------------------------------------------ host check
    def check_host(self) -> None:
        """Log in and resolve the placement within the probe's budget; look up
        the configured port groups (a missing one is not offered)."""
        client, where = host.check(self.cfg)
        with self._lock:
            self._client, self._where = client, where
        self._warmed = True
        self._check_portgroups(client, where)

    def _check_portgroups(self, client: VSphere, where: Placement) -> None:
        from vmgahp.drivers.vmware.placement import find_network

        for net_type, portgroup in (("nat", self.cfg.nat_portgroup), ("bridge", self.cfg.bridge_portgroup)):
            if not portgroup:
                continue
            try:
                find_network(client.session, where, portgroup, Deadline(host.CHECK_SECONDS))
            except VSphereError as exc:
                self._absent.add(net_type)
                log.get().warning("portgroup_unavailable", type=net_type, portgroup=portgroup, detail=str(exc))

    def network_plan(self) -> NetworkPlan:
        """The networking types with a port group. The first call also logs in
        (the runtime calls it while the starter sends the job ad, so that START
        does not pay for pyVmomi's import and the login); a failure is left
        for START to report."""
        if not self._warmed:
            self._warmed = True
            try:
                self._check_portgroups(*self.connection())
            except HypervisorError as exc:
                log.get().info("vsphere_not_ready", detail=exc.message)
        bridge = self.cfg.bridge_portgroup
        settings = dataclasses.replace(self.settings, bridge_interface=bridge) if bridge else self.settings

        def provides(net_type: str) -> bool:
            wanted = {"nat": self.cfg.nat_portgroup, "bridge": bridge}.get(net_type)
            return bool(wanted) and net_type not in self._absent

        return plan_networking(settings, user_supported=False, host_provides=provides)

    def read_job(self, ad: JobAd, job: VmJob, user: JobUser | None) -> VmJob:
        return job_ad.read_job(ad, job, user)

    # ---------------------------------------------------------------- start
    def _refuse_existing(self, client: VSphere, where: Placement, name: str, deadline: Deadline) -> None:
        with self._lock:
            ours = name in self._vms
        if ours or self._registered(client, where, name, deadline):
            raise HostError(f"a VM named {name} is already registered on {self.cfg.url}; it is left alone "
                            "(another job's VM, or a leftover that the startd's kill mode removes)")

    def _registered(self, client: VSphere, where: Placement, name: str, deadline: Deadline) -> Vm | None:
        """The VM of that name in vmgahp's VM folder (names are unique within a folder):
        one lookup, not a walk of the whole inventory."""
        index = client.session.content.searchIndex
        obj = client.session.invoke(f"find VM {name!r}", deadline, index.FindChild, where.folder, name)
        if obj is None:
            return None
        path = client.session.props(obj, ["config.files.vmPathName"], deadline).get("config.files.vmPathName", "")
        return Vm(obj, name, str(path))

    def _extra_config(self) -> dict[str, str]:
        try:
            return self.cfg.local_settings()
        except ConfigError as exc:
            raise HostError(str(exc)) from None

    def _network(self, job: VmJob) -> str | None:
        if not job.networking_type:
            return None
        return {"nat": self.cfg.nat_portgroup, "bridge": self.cfg.bridge_portgroup}.get(job.networking_type) or None

    def create(self, job: VmJob) -> VMwareDomain:
        deadline = self.deadline()
        client, where = self.connection(deadline)
        extras: job_ad.VMwareJob = job.extras
        folder = folder_name(job.name)
        vm: Vm | None = None
        try:
            self._refuse_existing(client, where, job.name, deadline)
            client.make_folder(where, folder, deadline)
            for path in extras.uploads:
                client.upload(where, Path(path), f"{folder}/{Path(path).name}", deadline)
            iso = self._upload_cdrom(client, where, job, folder, deadline)
            vm = client.register(where, f"{folder}/{Path(extras.vmx).name}", job.name, deadline)
            bases = [where.ds_path(f"{folder}/{name}") for name in extras.base_disks] if extras.snapshot_disk else []
            try:
                spec = VmSpec(memory_mb=job.memory_mib, cpus=job.vcpus, network=self._network(job),
                              mac=job.mac or None, iso=iso, extra_config=self._extra_config(), base_disks=bases)
            except ValueError as exc:
                raise JobImageError(f"reconfigure of {job.name}: {exc}") from None
            children = client.reconfigure(where, vm, spec, deadline)
            client.power_on(vm, deadline)
        except HostError as exc:
            if "already registered" not in exc.message:
                self._undo(client, where, folder, vm, job.name, Path(extras.vmx).name)
            raise
        except (VSphereError, HypervisorError, OSError) as exc:
            self._undo(client, where, folder, vm, job.name, Path(extras.vmx).name)
            if isinstance(exc, HypervisorError):
                raise
            raise self.failure(exc, f"start of {job.name}") from None
        domain = VMwareDomain(self, job, vm, folder, tuple(children))
        with self._lock:
            self._vms[job.name] = domain
        log.get().info("vsphere_started", name=job.name, folder=folder, children=children, network=spec.network)
        return domain

    def _upload_cdrom(self, client: VSphere, where: Placement, job: VmJob, folder: str,
                      deadline: Deadline) -> str | None:  # fmt: skip
        iso = next((d.path for d in job.disks if d.is_cdrom), None)
        if iso is None:
            return None
        client.upload(where, Path(iso), f"{folder}/{Path(iso).name}", deadline)
        return where.ds_path(f"{folder}/{Path(iso).name}")

    def _undo(self, client: VSphere, where: Placement, folder: str, vm: Vm | None, name: str, vmx: str) -> None:
        """A START that failed leaves nothing behind, best effort in a budget of
        its own: a timed-out register or power-on may still have happened."""
        deadline = Deadline(CLEANUP_SECONDS)
        try:
            found = vm or client.find_vm(where, f"{folder}/{vmx}", timeout=deadline)
            if found is not None:
                if client.power_state(found, deadline) != POWERED_OFF:
                    client.power_off(found, deadline)
                client.unregister(found, deadline)
            client.delete(where, folder, deadline)
        except VSphereError as exc:
            log.get().warning("vsphere_undo_incomplete", name=name, folder=folder, detail=str(exc))

    # -------------------------------------------------------------- restore
    def restore(self, job: VmJob, state: SavedState) -> VMwareDomain:
        record = dict(state.record)
        names: dict[str, str] = dict(record.get("names") or {})
        vmx = record.get("vmx")
        if not vmx or not names:
            raise JobImageError(f"restore of {job.name}: the saved state names no VMX")
        deadline = self.deadline()
        client, where = self.connection(deadline)
        extras: job_ad.VMwareJob = job.extras
        work = Path(job.working_dir)
        folder = str(record.get("folder") or folder_name(job.name))
        vm: Vm | None = None
        try:
            self._refuse_existing(client, where, job.name, deadline)
            try:  # the same folder name as at save time keeps the child disks' parent paths valid
                client.make_folder(where, folder, deadline)
            except AlreadyExists:
                folder = folder_name(job.name)
                client.make_folder(where, folder, deadline)
            saved = set(names.values())
            for path in extras.uploads:  # the base files the state builds on
                if Path(path).name not in saved and Path(path).name != vmx:
                    client.upload(where, Path(path), f"{folder}/{Path(path).name}", deadline)
            for local in state.files:  # perhaps under the staging suffix (contract)
                original = names.get(local) or names.get(_unstaged(local, names))
                if original is None:
                    raise JobImageError(f"restore of {job.name}: {local} is not part of the saved state")
                source = work / local
                if not source.is_file():
                    raise JobImageError(f"restore of {job.name}: {source} is missing")
                client.upload(where, source, f"{folder}/{original}", deadline)
            self._upload_cdrom(client, where, job, folder, deadline)
            vm = client.register(where, f"{folder}/{vmx}", job.name, deadline)
            client.power_on(vm, deadline)
        except HostError as exc:
            if "already registered" not in exc.message:
                self._undo(client, where, folder, vm, job.name, vmx)
            raise
        except (VSphereError, HypervisorError, OSError) as exc:
            self._undo(client, where, folder, vm, job.name, vmx)
            if isinstance(exc, HypervisorError):
                raise
            raise self.failure(exc, f"restore of {job.name}") from None
        children = tuple(where.ds_path(f"{folder}/{n}") for n in saved
                         if n.endswith(".vmdk") and "-vmgahp" in n and not n.endswith("-flat.vmdk"))
        domain = VMwareDomain(self, job, vm, folder, children)
        with self._lock:
            self._vms[job.name] = domain
        log.get().info("vsphere_restored", name=job.name, folder=folder, files=sorted(saved))
        return domain

    # ---------------------------------------------------------------- others
    def finish(self, job: VmJob, output: bool = True) -> None:
        """The guest powered off by itself: end it, its disks as the output."""
        with self._lock:
            domain = self._vms.get(job.name)
        if domain is not None:
            domain.end(output=output)

    def lookup(self, name: str) -> VMwareDomain | None:
        with self._lock:
            return self._vms.get(name)

    def destroy_by_name(self, name: str) -> bool:
        """QUIT/kill mode: a VM of ours by that name is ended without output;
        one this process does not know (kill mode) is powered off and
        unregistered, and its folder deleted only if vmgahp made it."""
        domain = self.lookup(name)
        if domain is not None:
            domain.destroy()
            return True
        deadline = self.deadline()
        client, where = self.connection(deadline)
        try:
            vm = self._registered(client, where, name, deadline)
            if vm is None:
                return False
            folder = vm.folder.split("] ", 1)[-1]
            if folder.startswith(FOLDER_PREFIX) and "/" not in folder:
                VMwareDomain(self, None, vm, folder).end(output=False)
            else:  # not a folder vmgahp made: its files are not ours to delete
                if client.power_state(vm, deadline) != POWERED_OFF:
                    client.power_off(vm, deadline)
                client.unregister(vm, deadline)
        except VSphereError as exc:
            raise self.failure(exc, f"kill of {name}") from None
        return True


def _unstaged(local: str, names: dict[str, str]) -> str:
    """``x.partial`` -> ``x`` when ``x`` is a name of the state."""
    for name in names:
        if local.startswith(name) and local != name:
            return name
    return local


__all__ = ["VMwareDomain", "VMwareHypervisor"]
