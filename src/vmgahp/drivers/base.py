"""The driver contract: what a hypervisor backend must provide.

A backend is a :class:`Hypervisor` (one per VM type, owns the connection) that
creates :class:`Domain` objects (one per running VM). The lifecycle rules of
the GAHP - which state allows which command, which token a failure carries -
live once in :mod:`vmgahp.vm`, above this layer; drivers only provide
primitives and raise :class:`~vmgahp.errors.GahpError` or
:class:`HypervisorError` when a primitive fails.

Every method may block; the runtime calls them off the command loop, under a
deadline.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmgahp.gahp.config import Settings
    from vmgahp.job.model import VmJob
    from vmgahp.job.networking import NetworkPlan


class Capability(enum.Flag):
    """What a backend can do, declared by each driver (``Hypervisor.capabilities``).

    SUPPORT_VMS comes from the registry (is the backend's library installed?)
    and the probe's networking types from ``network_plan``; these flags say
    what a driver offers at all, for callers that must choose (none yet)."""

    NONE = 0
    PAUSE = enum.auto()  # soft suspend: RAM kept, CPUs stopped
    SAVE = enum.auto()  # hard suspend: memory state written to a file
    CHECKPOINT = enum.auto()  # save + restore on another host
    NETWORK_NAT = enum.auto()
    NETWORK_BRIDGE = enum.auto()
    NETWORK_USER = enum.auto()


class DomainState(enum.Enum):
    RUNNING = "running"  # running or blocked
    PAUSED = "paused"
    SHUTOFF = "shutoff"  # exists but is not running (crashed, shut off)
    GONE = "gone"  # the hypervisor no longer knows it


@dataclass(frozen=True, slots=True)
class DomainInfo:
    state: DomainState
    cpu_time_ns: int = 0
    memory_kib: int = 0
    max_memory_kib: int = 0
    vcpus: int = 1


@dataclass(frozen=True, slots=True)
class AttachedDisk:
    """A disk as the running VM really uses it (read back from the hypervisor)."""

    device: str
    path: str
    format: str = ""
    readonly: bool = False
    cdrom: bool = False


class HypervisorError(Exception):
    """A hypervisor call failed; ``message`` is the hypervisor's own text."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class HostCheckError(Exception):
    """This host cannot run the VM type (start-up check, exit 1)."""


class Domain(ABC):
    """One VM on the hypervisor, addressed by its unique name."""

    name: str

    @abstractmethod
    def info(self) -> DomainInfo:
        """Current state and counters; ``GONE`` when the hypervisor lost it."""

    @abstractmethod
    def pause(self) -> None: ...

    @abstractmethod
    def unpause(self) -> None: ...

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the memory state to ``path``; the VM stops running."""

    @abstractmethod
    def shutdown(self, grace_seconds: float) -> None:
        """Ask the guest to power off; destroy it if it has not after the grace."""

    @abstractmethod
    def destroy(self) -> None:
        """Power off at once. A domain that is already gone is not an error."""

    def pid(self) -> int:
        """The host process of the VM, 0 when unknown (the C++ always says 0)."""
        return 0

    def describe(self) -> str:
        """The hypervisor's own description of the VM (libvirt: domain XML)."""
        return ""

    def disks(self, description: str = "") -> list[AttachedDisk]:
        """The file-backed disks the VM really uses, from ``description`` (as
        :meth:`describe` returned it) or from the hypervisor now."""
        return []


class Hypervisor(ABC):
    """A connection to one kind of hypervisor, shared by every VM of the gahp."""

    vm_type: str
    capabilities: Capability = Capability.NONE

    def __init__(self, settings: Settings, vm_type: str) -> None:
        self.settings = settings
        self.vm_type = vm_type

    @abstractmethod
    def check_host(self) -> None:
        """Raise HostCheckError if this host cannot run ``vm_type`` at all."""

    @abstractmethod
    def network_plan(self) -> NetworkPlan:
        """The configured networking types this host can provide (spec 4.6)."""

    @abstractmethod
    def create(self, job: VmJob) -> Domain:
        """Build the VM description from ``job`` and start it."""

    @abstractmethod
    def restore(self, job: VmJob, path: Path) -> Domain:
        """Start the VM again from a memory state written by Domain.save."""

    @abstractmethod
    def lookup(self, name: str) -> Domain | None:
        """The domain of that name, or None if the hypervisor has none."""

    def destroy_by_name(self, name: str) -> bool:
        """Kill mode: destroy the named domain; True if one was destroyed."""
        domain = self.lookup(name)
        if domain is None:
            return False
        domain.destroy()
        return True

    def close(self) -> None:
        """Release the connection (best effort)."""
