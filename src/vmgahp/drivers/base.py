"""The driver contract: everything a hypervisor backend provides, and nothing more.

A backend is a package under ``drivers/`` that declares itself to the
registry and implements a :class:`Hypervisor` (one per gahp, owns the
connection) which creates :class:`Domain` objects (one per running VM). All
knowledge of a VM type lives behind this contract:

* its knobs and host check (``check_host``), and its networking plan;
* the VM-type part of the job ad (``read_job``: disks, kernels, VMX files...),
  checked in the C++ order with the tokens of its own family;
* how disks are prepared (``prepare``: libvirt's qcow2 overlays) and what
  becomes of them when the guest ends (``finish``);
* what a saved state is (:class:`SavedState`: files the driver writes into the
  working directory plus a record of its own) and how it restores;
* what it can do for a given job (:class:`Capability` - callers read it).

The lifecycle rules of the GAHP - which state allows which command, which
token a failure carries - live once in :mod:`vmgahp.vm`. Drivers report
failures as :class:`HypervisorError` kinds; :mod:`vmgahp.vm.failures` turns
them into tokens. Every method may block; the runtime calls them off the
command loop, under a deadline. :mod:`vmgahp.drivers.fake` is an in-memory
implementation that documents these semantics by example.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from vmgahp.errors import VmgahpError

if TYPE_CHECKING:
    from vmgahp.job.access import JobUser
    from vmgahp.job.jobad import JobAd
    from vmgahp.job.model import VmJob
    from vmgahp.job.networking import NetworkPlan
    from vmgahp.settings import Settings


class Capability(enum.Flag):
    """What a backend can do for a job; ``vm/`` reads these instead of VM types."""

    NONE = 0
    PAUSE = enum.auto()  # soft suspend: RAM kept, CPUs stopped
    SAVE = enum.auto()  # hard suspend: the state written to the working dir
    CHECKPOINT = enum.auto()  # a saved state restores in another working dir / host
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
    mac: str = ""  # when the hypervisor knows them (the starter reads MAC= and IP=)
    ip: str = ""


@dataclass(frozen=True)
class SavedState:
    """A VM's saved state: files in the working directory and the driver's record.

    ``files`` are the names (in the working directory) of the files the save
    wrote - the first is the main state, opened by ``restore`` -, ``keeps``
    those it relies on that were there already (libvirt: the overlay layers the
    save froze); ``record`` is JSON-able data only the driver reads back. The VM
    layer hashes all of them into the checkpoint manifest.
    """

    files: tuple[str, ...]
    keeps: tuple[str, ...] = ()
    record: Mapping[str, Any] = field(default_factory=dict)


class HypervisorError(VmgahpError):
    """A hypervisor operation failed; ``message`` is the hypervisor's own text.
    The kind says whose fault it is (the job is held only for the job's own)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class HostError(HypervisorError):
    """The host or the hypervisor failed (connection, internal error, resources)."""


class JobImageError(HypervisorError):
    """The job's own image, description or saved state is at fault."""


class HostCheckError(VmgahpError):
    """This host cannot run the VM type (start-up check, exit 1)."""


class Domain(ABC):
    """One VM on the hypervisor, addressed by its unique name."""

    name: str

    @abstractmethod
    def info(self) -> DomainInfo:
        """Current state and counters; ``GONE`` when the hypervisor lost it."""

    @abstractmethod
    def pause(self) -> None:
        """Stop the CPUs, keep the RAM. Pausing a paused domain is not an error;
        a domain that is gone is (HypervisorError), as for unpause and save."""

    @abstractmethod
    def unpause(self) -> None:
        """Run a paused domain again; a running one is left as it is."""

    @abstractmethod
    def save(self, working_dir: Path, suffix: str) -> SavedState:
        """Save the VM's state; it stops running and the hypervisor forgets the
        domain (``info`` says GONE, ``lookup`` None), as libvirt forgets a
        transient domain it saved. A paused domain's state comes back running.
        Every file this writes is named ``<name><suffix>`` in ``working_dir``
        (the VM layer renames them into place once the checkpoint is
        complete); the returned state names them without the suffix. On
        failure nothing with the suffix is left."""

    @abstractmethod
    def shutdown(self, grace_seconds: float) -> None:
        """Ask the guest to power off (a paused guest is unpaused first: it
        cannot see the button); destroy it if it has not after the grace. A
        domain that is already gone is not an error."""

    @abstractmethod
    def destroy(self) -> None:
        """Power off at once. A domain that is already gone is not an error."""

    def pid(self) -> int:
        """The host process of the VM, 0 when unknown (the C++ always says 0)."""
        return 0


class Hypervisor(ABC):
    """A connection to one kind of hypervisor, shared by every VM of the gahp."""

    vm_type: str
    capabilities: Capability = Capability.NONE

    def __init__(self, settings: Settings, vm_type: str) -> None:
        self.settings = settings
        self.vm_type = vm_type

    def capabilities_for(self, job: VmJob) -> Capability:
        """What this backend can do for ``job`` (e.g. not save a Xen HVM guest)."""
        return self.capabilities

    @abstractmethod
    def check_host(self) -> None:
        """Raise HostCheckError if this host cannot run ``vm_type`` at all."""

    @abstractmethod
    def network_plan(self) -> NetworkPlan:
        """The configured networking types this host can provide (spec 4.6)."""

    def warm_up(self) -> None:
        """Load what ``read_job`` and ``create`` will need (modules, connections),
        called while the starter is still sending the job ad; may block. Not
        done at construction: the host check builds a driver too, and must stay
        quick. Optional: by default there is nothing to load."""
        return None

    @abstractmethod
    def read_job(self, ad: JobAd, job: VmJob, user: JobUser | None) -> VmJob:
        """The VM-type part of START's checks, after the common ones, in the C++
        order: return ``job`` with its disks and type-specific settings, or
        raise GahpError with this type's token."""

    def prepare(self, job: VmJob, restored: SavedState | None, avoid: frozenset[str] = frozenset()) -> VmJob:
        """The job with its disks as the VM will open them (libvirt: overlays),
        over the layers a restored state left when there is one. Never writes a
        file that is already in the working directory, and never builds on
        ``avoid`` (the files of another job's checkpoint found there). The
        files it makes are named ``vmgahp-overlay-*``: a START or RESUME that
        fails removes those it made (:func:`vmgahp.vm.start.remove_new_vm_files`)."""
        return job

    def adopt_legacy_state(self, job: VmJob, manifest: dict[str, Any]) -> SavedState | None:
        """A checkpoint manifest of an older format this backend wrote, as a state."""
        return None

    def finish(self, job: VmJob, output: bool = True) -> None:
        """The guest ended by itself: leave its disks as the job's output, or
        (``output`` false: ``vm_no_output_vm``) remove the files made for them."""
        return None

    def restore_mismatch(self, job: VmJob, state: SavedState) -> str:
        """Why ``job`` cannot restore ``state`` (another job's disks...), "" if it can."""
        return ""

    @abstractmethod
    def create(self, job: VmJob) -> Domain:
        """Build the VM description from ``job`` and start it. A name the
        hypervisor already runs is a HostError: that domain (perhaps another
        job's live VM) is left alone."""

    @abstractmethod
    def restore(self, job: VmJob, state: SavedState) -> Domain:
        """Start the VM again from a state :meth:`Domain.save` wrote; it comes
        back running. The state's files are found in ``job.working_dir`` under
        the names ``state.files`` gives - moved to another directory or host,
        or still under the staging suffix (the VM layer brings a guest back
        that way when it cannot commit its save). A state the hypervisor
        cannot use is a JobImageError; a name it already runs a HostError,
        as in :meth:`create`."""

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
        return None
