"""An in-memory hypervisor: the driver contract by example, and faults on demand.

Like nova's ``FakeDriver``, it ships in the package and documents what a real
backend does; it is not a VM type (a module, not a package: the registry never
lists it). Tests build it and hand it to ``Runtime(hypervisor_factory=...)``::

    hv = FakeHypervisor()
    domain = hv.create(job)                 # RUNNING at once; a second create of
                                            # that name is a HostError
    domain.pause(); domain.pause()          # idempotent, as unpause
    state = domain.save(work, ".partial")   # writes work/fake.mem.ckpt.partial
    state.files                             # ("fake.mem.ckpt",): names without the suffix
    domain.info().state                     # GONE: transient, the save ended it
    hv.restore(job, state)                  # RUNNING again, from the file the
                                            # state names (JobImageError if corrupt)
    hv.guest_powers_off(job.name)           # the guest shuts itself down: GONE
    hv.prepare(job, state)                  # snapshot disks: a new vmgahp-overlay-<dev>.<n>.fake
                                            # layer (JSON naming its backing) over the state's

Fault injection (what the fake is for; :mod:`vmgahp.drivers.fake_faults`)::

    hv.faults.fail("save", HostError("disk full"))       # every save raises it
    hv.faults.fail("save", HostError("x"), times=1, leaves=DomainState.GONE)
    gate = hv.faults.block("info")                       # a hung hypervisor...
    gate.wait_entered(1); gate.release()                 # ...until released
    hv.faults.delay("create", 0.5)                       # a slow one
    hv.count("pause"), hv.calls                          # what was asked, in order

``hv.shutdown_seconds`` is how long the guest takes to honour the power
button (None: it ignores it and ``shutdown`` destroys it after the grace);
``hv.withhold`` takes capabilities away from every job (``capabilities_for``).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmgahp.drivers.base import (
    Capability,
    Domain,
    DomainInfo,
    DomainState,
    HostError,
    Hypervisor,
    HypervisorError,
    JobImageError,
    SavedState,
)
from vmgahp.drivers.fake_faults import Call, Faults, Gate
from vmgahp.errors import GahpError
from vmgahp.job.networking import NetworkPlan, plan_networking
from vmgahp.job.workdir import local_name
from vmgahp.protocol import tokens
from vmgahp.settings import Settings

if TYPE_CHECKING:
    from vmgahp.job.access import JobUser
    from vmgahp.job.jobad import JobAd
    from vmgahp.job.model import VmJob

MEMORY = "fake.mem.ckpt"  # the saved state, JSON
FORMAT = "vmgahp-fake-1"
LAYER = "vmgahp-overlay-{device}.{n}.fake"  # prepare's layers: vmgahp-overlay-*, as the VM layer expects
CPU_LOAD = 0.25  # the share of each vCPU a running fake guest uses
_pids = itertools.count(40000)

__all__ = ["Call", "FakeDomain", "FakeHost", "FakeHypervisor", "Faults", "Gate"]


@dataclass
class _Guest:
    """What the fake host knows of one running domain."""

    job: VmJob
    paused: bool = False
    pid: int = field(default_factory=lambda: next(_pids))
    cpu_ns: int = 0  # CPU time charged before ``since``
    since: float = field(default_factory=time.monotonic)

    def cpu_time_ns(self) -> int:
        if self.paused:
            return self.cpu_ns
        return self.cpu_ns + int((time.monotonic() - self.since) * 1e9 * CPU_LOAD * self.job.vcpus)

    def set_paused(self, paused: bool) -> None:
        self.cpu_ns, self.since, self.paused = self.cpu_time_ns(), time.monotonic(), paused


class FakeHost:
    """The domains one "hypervisor host" runs; share one between two
    FakeHypervisors to stand for two gahps (or kill mode) on one machine."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.guests: dict[str, _Guest] = {}


class FakeDomain(Domain):
    """A handle by name, as libvirt's: it outlives the domain (``info`` says GONE)."""

    def __init__(self, name: str, hypervisor: FakeHypervisor) -> None:
        self.name = name
        self._hv = hypervisor

    def __repr__(self) -> str:
        return f"FakeDomain({self.name!r})"

    def _guest(self, op: str) -> _Guest:
        guest = self._hv.host.guests.get(self.name)
        if guest is None:
            raise HypervisorError(f"{op}: no domain named {self.name}")
        return guest

    def info(self) -> DomainInfo:
        with self._hv._operation("info", self.name), self._hv.host.lock:
            guest = self._hv.host.guests.get(self.name)
            if guest is None:
                return DomainInfo(DomainState.GONE)
            kib = guest.job.memory_mib * 1024
            return DomainInfo(DomainState.PAUSED if guest.paused else DomainState.RUNNING,
                              cpu_time_ns=guest.cpu_time_ns(), memory_kib=kib, max_memory_kib=kib,
                              vcpus=guest.job.vcpus, mac=guest.job.mac)

    def pause(self) -> None:
        with self._hv._operation("pause", self.name), self._hv.host.lock:
            guest = self._guest("pause")
            if not guest.paused:
                guest.set_paused(True)

    def unpause(self) -> None:
        with self._hv._operation("unpause", self.name), self._hv.host.lock:
            guest = self._guest("unpause")
            if guest.paused:
                guest.set_paused(False)

    def save(self, working_dir: Path, suffix: str) -> SavedState:
        """Write the state to ``<working_dir>/fake.mem.ckpt<suffix>``; the domain
        ends. The image comes back running even if it was saved paused."""
        with self._hv._operation("save", self.name), self._hv.host.lock:
            guest = self._guest("save")
            job = guest.job
            disks = [_disk_record(disk, job.working_dir) for disk in job.disks if not disk.is_cdrom]
            state = {"format": FORMAT, "name": self.name, "memory_mib": job.memory_mib, "vcpus": job.vcpus,
                     "cpu_ns": guest.cpu_time_ns(), "disks": disks}
            target = Path(working_dir) / (MEMORY + suffix)
            try:
                target.write_text(json.dumps(state))
            except OSError as exc:
                target.unlink(missing_ok=True)
                raise HostError(f"save of {self.name} to {target}: {exc}") from exc
            del self._hv.host.guests[self.name]
            keeps = sorted({name for entry in disks for name in entry["keeps"]})
            return SavedState((MEMORY,), tuple(keeps), {"name": self.name, "disks": disks})

    def shutdown(self, grace_seconds: float) -> None:
        """The guest powers off after ``hv.shutdown_seconds`` if that is within
        the grace; otherwise it is destroyed when the grace is over."""
        with self._hv._operation("shutdown", self.name):
            with self._hv.host.lock:
                guest = self._hv.host.guests.get(self.name)
                if guest is None:
                    return
                guest.set_paused(False)  # a paused guest cannot see the button
            takes = self._hv.shutdown_seconds
            wait = grace_seconds if takes is None else min(takes, grace_seconds)
            if wait > 0:
                self._hv.faults.sleep(wait)
            if takes is not None and takes <= grace_seconds:
                self._hv.guest_powers_off(self.name)
                return
        self.destroy()

    def destroy(self) -> None:
        with self._hv._operation("destroy", self.name), self._hv.host.lock:
            self._hv.host.guests.pop(self.name, None)

    def pid(self) -> int:
        with self._hv._operation("pid", self.name), self._hv.host.lock:
            guest = self._hv.host.guests.get(self.name)
            return guest.pid if guest is not None else 0


class FakeHypervisor(Hypervisor):
    """Runs any VM type it is given; every job may pause, save and checkpoint."""

    capabilities = (Capability.PAUSE | Capability.SAVE | Capability.CHECKPOINT | Capability.NETWORK_NAT
                    | Capability.NETWORK_BRIDGE | Capability.NETWORK_USER)

    def __init__(self, settings: Settings | None = None, vm_type: str = "kvm", host: FakeHost | None = None) -> None:
        super().__init__(settings or Settings(vm_memory=1024), vm_type)
        self.host = host or FakeHost()
        self.faults = Faults()
        self.calls: list[Call] = []
        self.shutdown_seconds: float | None = 0.0
        self.withhold = Capability.NONE
        self.closed = False

    def __repr__(self) -> str:
        return f"FakeHypervisor({self.vm_type!r})"

    # ------------------------------------------------------------ test hooks
    def _operation(self, op: str, name: str = "") -> _Operation:
        return _Operation(self, op, name)

    def count(self, op: str, name: str | None = None) -> int:
        return sum(1 for call in list(self.calls) if call.op == op and name in (None, call.name))

    def running(self) -> list[str]:
        with self.host.lock:
            return sorted(self.host.guests)

    def guest_powers_off(self, name: str) -> None:
        """The guest shuts itself down: a transient domain vanishes."""
        with self.host.lock:
            self.host.guests.pop(name, None)

    # -------------------------------------------------------------- contract
    def capabilities_for(self, job: VmJob) -> Capability:
        return self.capabilities & ~self.withhold

    def check_host(self) -> None:
        with self._operation("check_host"):
            pass

    def network_plan(self) -> NetworkPlan:
        with self._operation("network_plan"):
            return plan_networking(self.settings, user_supported=True)

    def read_job(self, ad: JobAd, job: VmJob, user: JobUser | None) -> VmJob:
        """``VMPARAM_vm_Disk = file:device:perm[:format], ...`` (a transferred file
        by its name, any other by absolute path; it must exist) and
        ``VMPARAM_vm_Snapshot_Disk``; failures carry the VM type's disk tokens."""
        from vmgahp.job.model import Disk

        with self._operation("read_job", job.name):
            missing, invalid = ((tokens.XEN_NO_DISK_PARAM, tokens.XEN_INVALID_DISK_PARAM) if job.vm_type == "xen"
                                else (tokens.KVM_NO_DISK_PARAM, tokens.KVM_INVALID_DISK_PARAM))
            items = [item.strip() for item in (ad.get_str("VMPARAM_vm_Disk") or "").split(",") if item.strip()]
            if not items:
                raise GahpError(missing, "VMPARAM_vm_Disk is missing")
            disks = []
            for item in items:
                fields = [f.strip() for f in item.split(":") if f.strip()]
                if len(fields) not in (3, 4):
                    raise GahpError(invalid, f"{item!r}: expected file:device:permission[:format]")
                local = os.path.join(job.working_dir, os.path.basename(fields[0]))
                path = local if os.path.isfile(local) else fields[0]
                if not os.path.isabs(path) or not os.path.exists(path):
                    raise GahpError(invalid, f"{fields[0]!r} is not in the working directory nor an existing path")
                disks.append(Disk(path=path, device=fields[1].lower(), permission=fields[2],
                                  format=fields[3].lower() if len(fields) == 4 else "", transferred=path == local))
            snapshot = bool(ad.get_bool("VMPARAM_vm_Snapshot_Disk"))
            return job.model_copy(update={"disks": tuple(disks), "snapshot_disk": snapshot, "cdrom_device": "hdc"})

    def prepare(self, job: VmJob, restored: SavedState | None, avoid: frozenset[str] = frozenset()) -> VmJob:
        """Snapshot disks get a new layer over the state's top (a restore), else
        over the newest layer already there (not one ``avoid`` names), else
        over the disk; the layer is created exclusively, so nothing there is
        ever written."""
        with self._operation("prepare", job.name):
            if not job.snapshot_disk:
                return job
            tops = {e["device"]: e["file"] for e in (restored.record.get("disks", []) if restored else [])}
            disks = []
            for disk in job.disks:
                if not disk.writable or disk.is_cdrom:
                    disks.append(disk)
                    continue
                existing = _layers(job.working_dir, disk.device)
                ours = {n: name for n, name in existing.items() if name not in avoid}
                below = tops.get(disk.device) or (ours[max(ours)] if ours else local_name(disk.path, job.working_dir))
                name = LAYER.format(device=disk.device, n=max(existing, default=0) + 1)
                try:
                    with open(Path(job.working_dir) / name, "x") as handle:
                        json.dump({"format": FORMAT, "device": disk.device, "backing": below}, handle)
                except OSError as exc:
                    raise HostError(f"cannot create {name}: {exc}") from exc
                disks.append(disk.model_copy(update={"path": str(Path(job.working_dir) / name), "format": "fake"}))
            return job.model_copy(update={"disks": tuple(disks)})

    def finish(self, job: VmJob, output: bool = True) -> None:
        """The disks stay as they are as output; without output the layers go."""
        with self._operation("finish", job.name):
            if not output:
                for disk in job.disks:
                    for name in _layers(job.working_dir, disk.device).values():
                        (Path(job.working_dir) / name).unlink(missing_ok=True)

    def restore_mismatch(self, job: VmJob, state: SavedState) -> str:
        with self._operation("restore_mismatch", job.name):
            ours = {d.device: _disk_record(d, job.working_dir)["base"] for d in job.disks if not d.is_cdrom}
            for entry in state.record.get("disks", []):
                if ours.get(entry["device"]) != entry["base"]:
                    return f"its {entry['device']} is {entry['base']!r}, this job's is {ours.get(entry['device'])!r}"
            return ""

    def create(self, job: VmJob) -> FakeDomain:
        with self._operation("create", job.name):
            for disk in job.disks:
                if not os.path.exists(disk.path):  # a real hypervisor opens every image
                    raise JobImageError(f"cannot open {disk.path}: no such file")
            self._add(job, _Guest(job))
            return FakeDomain(job.name, self)

    def restore(self, job: VmJob, state: SavedState) -> FakeDomain:
        with self._operation("restore", job.name):
            path = Path(job.working_dir) / state.files[0]
            try:
                saved = json.loads(path.read_text())
                if not isinstance(saved, dict) or saved.get("format") != FORMAT:
                    raise ValueError("not a fake saved state")
                cpu_ns = int(saved["cpu_ns"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise JobImageError(f"restore of {job.name} from {path}: {exc}") from exc
            if saved.get("name") != job.name:
                raise JobImageError(f"{path} is the state of {saved.get('name')!r}, not {job.name!r}")
            self._add(job, _Guest(job, cpu_ns=cpu_ns))
            return FakeDomain(job.name, self)

    def _add(self, job: VmJob, guest: _Guest) -> None:
        with self.host.lock:
            if job.name in self.host.guests:
                raise HostError(f"a domain named {job.name} already exists; it is left alone")
            self.host.guests[job.name] = guest

    def lookup(self, name: str) -> FakeDomain | None:
        with self._operation("lookup", name), self.host.lock:
            return FakeDomain(name, self) if name in self.host.guests else None

    def destroy_by_name(self, name: str) -> bool:
        with self._operation("destroy_by_name", name):
            return super().destroy_by_name(name)

    def close(self) -> None:
        with self._operation("close"):
            self.closed = True


class _Operation:
    """Record the call, apply its faults; a failure may leave the domain changed."""

    def __init__(self, hv: FakeHypervisor, op: str, name: str) -> None:
        self.hv, self.op, self.name = hv, op, name

    def __enter__(self) -> None:
        self.hv.calls.append(Call(self.op, self.name))
        fault = self.hv.faults.apply(self.op, self.name)
        if fault is None:
            return
        if fault.leaves is not None:
            with self.hv.host.lock:
                guest = self.hv.host.guests.get(self.name)
                if fault.leaves is DomainState.GONE:
                    self.hv.host.guests.pop(self.name, None)
                elif guest is not None:
                    guest.set_paused(fault.leaves is DomainState.PAUSED)
        assert fault.error is not None  # apply() returns only the faults that raise
        raise fault.error

    def __exit__(self, *exc: Any) -> None:
        return None


def _disk_record(disk: Any, working_dir: str) -> dict[str, Any]:
    """A disk as a state records it: its top file, the layers under it down to
    its base (the files the state keeps) and the base."""
    chain = [local_name(disk.path, working_dir)]
    while (below := _backing(Path(working_dir) / chain[-1])) is not None:
        chain.append(below)
    keeps = chain[:-1] if len(chain) > 1 else ([chain[0]] if disk.writable and "/" not in chain[0] else [])
    return {"device": disk.device, "file": chain[0], "base": chain[-1], "keeps": keeps}


def _backing(path: Path) -> str | None:
    if not path.name.endswith(".fake"):
        return None
    try:
        return str(json.loads(path.read_text())["backing"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _layers(working_dir: str, device: str) -> dict[int, str]:
    """The fake layers of ``device`` in the working dir, by generation."""
    prefix = f"vmgahp-overlay-{device}."
    found: dict[int, str] = {}
    try:
        names = os.listdir(working_dir)
    except OSError:
        return found
    for name in names:
        middle = name[len(prefix):-len(".fake")] if name.startswith(prefix) and name.endswith(".fake") else ""
        if middle.isdigit():
            found[int(middle)] = name
    return found
