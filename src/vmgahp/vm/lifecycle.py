"""One job's VM: the GAHP lifecycle rules, once for every driver.

State follows the C++ gahp (``RUNNING | STOPPED | SUSPENDED`` plus a
soft-suspend flag, spec 4.10), with one deliberate fix: a VM this gahp saved
itself (hard suspend, checkpoint) is SUSPENDED and reports
``STATUS=Suspended``, never ``Stopped`` (quirk Q2), so the starter does not
end a suspended job.

Methods block on the hypervisor; the runtime calls them from worker threads,
one mutating operation at a time per VM. ``status`` may run concurrently with
a mutating operation, so the fields it shares are guarded by a small lock and
``busy`` names the operation in progress.
"""

from __future__ import annotations

import contextlib
import enum
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from vmgahp import log
from vmgahp.drivers.base import Capability, Domain, DomainState, Hypervisor, HypervisorError, SavedState
from vmgahp.errors import GahpError
from vmgahp.job.workdir import fsync_dir, give_to, write_atomically
from vmgahp.protocol import tokens
from vmgahp.protocol.status import format_status
from vmgahp.vm import checkpoint
from vmgahp.vm.failures import as_gahp_error
from vmgahp.vm.start import remove_new_vm_files

if TYPE_CHECKING:
    from vmgahp.job.model import VmJob  # pydantic: loaded by the first START, not at start-up

_SAVING = frozenset({"CONDOR_VM_SUSPEND", "CONDOR_VM_CHECKPOINT"})
STAGED = ".partial"  # a save writes its files under this suffix until they are committed


class VmState(enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    SUSPENDED = "suspended"


class CpuUtilization:
    """CPUUTILIZATION as the C++ computes it: one process-wide baseline.

    The baseline is taken on the first Running STATUS of the process; elapsed
    time counts in whole seconds, so a STATUS within the same second as the
    previous one reports 1.000000 (spec 3.12, Q8, section 9).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_stamp: int | None = None
        self._last_cpu_ns = 0

    def sample(self, cpu_time_ns: int, vcpus: int) -> float:
        now = int(time.time())
        with self._lock:
            if self._last_stamp is None:
                self._last_stamp = now
            elapsed = now - self._last_stamp
            utilization = 1.0
            if elapsed > 0:
                delta = max(0, cpu_time_ns - self._last_cpu_ns)
                utilization = delta / (elapsed * max(1, vcpus) * 1e9)
            self._last_cpu_ns = cpu_time_ns
            self._last_stamp = now
        return utilization


class VirtualMachine:
    def __init__(
        self,
        vm_id: int,
        job: VmJob,
        hypervisor: Hypervisor,
        domain: Domain,
        cpu: CpuUtilization,
    ) -> None:
        self.vm_id = vm_id
        self.job = job
        self.hypervisor = hypervisor
        self.domain = domain
        self._cpu = cpu
        self._lock = threading.Lock()
        self.state = VmState.RUNNING
        self.soft_suspended = False
        self.self_shutdown = False
        self.busy: str | None = None
        self.saved: SavedState | None = None  # the state of the last save, while SUSPENDED

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def caps(self) -> Capability:
        return self.hypervisor.capabilities_for(self.job)

    @property
    def timestamp_file(self) -> Path:
        return Path(self.job.working_dir) / checkpoint.TIMESTAMP

    @contextlib.contextmanager
    def busy_with(self, command: str) -> Iterator[None]:
        """Mark a mutating operation in progress (STATUS reads it)."""
        with self._lock:
            self.busy = command
        try:
            yield
        finally:
            with self._lock:
                self.busy = None

    def _set(self, state: VmState, soft: bool = False) -> None:
        with self._lock:
            self.state = state
            self.soft_suspended = soft

    # ---------------------------------------------------------------- STATUS
    def status(self) -> str:
        """The STATUS text of spec 3.12 (success), or GahpError."""
        with self._lock:
            state, busy = self.state, self.busy
        if state is VmState.STOPPED:
            return "STATUS=Stopped"
        if state is VmState.SUSPENDED and busy is None:
            return "STATUS=Suspended"
        if busy in _SAVING or (state is VmState.SUSPENDED and busy == "CONDOR_VM_RESUME"):
            # A save pauses the guest first, and libvirt answers no query
            # about a domain until its save (or restore) is over: report what
            # the guest is - suspended - instead of waiting seconds for it.
            return "STATUS=Suspended"
        try:
            info = self.domain.info()
        except HypervisorError as exc:
            raise as_gahp_error("CONDOR_VM_STATUS", exc, "domain lookup") from exc
        if info.state is DomainState.RUNNING:
            utilization = self._cpu.sample(info.cpu_time_ns, info.vcpus)
            return format_status("Running", utilization=utilization, cpu_time=info.cpu_time_ns / 1e9,
                                 memory_kib=info.memory_kib, max_memory_kib=info.max_memory_kib,
                                 mac=info.mac, ip=info.ip)  # when the hypervisor knows them (VMware)
        if info.state is DomainState.PAUSED:
            return "STATUS=Suspended"
        # The domain is gone or shut off. While this gahp is saving or
        # restoring it that is expected and not the end of the job.
        if busy in ("CONDOR_VM_SOFT_SUSPEND", "CONDOR_VM_RESUME"):
            return "STATUS=Suspended"
        if busy == "CONDOR_VM_STOP":
            return "STATUS=Stopped"  # the power-off STOP asked for, not an exit of the guest's own
        with self._lock:
            if self.state is VmState.RUNNING:
                self.self_shutdown = True
                log.get().info("vm_exited", detail="the guest powered off by itself")
            self.state = VmState.STOPPED
            self.soft_suspended = False
        return "STATUS=Stopped"

    def pid(self) -> int:
        return self.domain.pid()

    # ---------------------------------------------------------- transitions
    def soft_suspend(self) -> None:
        if self.soft_suspended:
            return
        if self.state is not VmState.RUNNING:
            raise GahpError(tokens.VM_INVALID_OPERATION, f"soft suspend of a {self.state.value} VM")
        if Capability.PAUSE not in self.caps:
            self.suspend()  # the C++ falls back to a hard suspend when pausing fails
            return
        try:
            self.domain.pause()
        except HypervisorError as exc:
            log.get().warning("pause_failed", detail=str(exc), fallback="hard suspend")
            self.suspend()
            return
        self._set(VmState.RUNNING, soft=True)

    def suspend(self) -> None:
        if self.state is VmState.SUSPENDED:
            return
        if self.state is not VmState.RUNNING:
            raise GahpError(tokens.VM_INVALID_OPERATION, f"suspend of a {self.state.value} VM")
        if Capability.SAVE not in self.caps:
            raise GahpError(tokens.VM_NO_SUPPORT_SUSPEND, "this VM cannot be saved "
                            "(Xen HVM guests need XEN_ALLOW_HARDWARE_VT_SUSPEND)")
        state = self._save("CONDOR_VM_SUSPEND")
        try:
            self._commit(state)
        except OSError as exc:
            self._undo_save(state)
            raise GahpError(tokens.INTERNAL, f"save: {exc}") from exc
        # A checkpoint that named those files is superseded by this save.
        (Path(self.job.working_dir) / checkpoint.MANIFEST).unlink(missing_ok=True)
        self.saved = state
        self._set(VmState.SUSPENDED)

    def _save(self, command: str) -> SavedState:
        """Save the VM's state into the working dir under the staging suffix.
        The VM is no longer running; nothing is staged if the save fails."""
        if self.soft_suspended:
            self._unpause()
        try:
            return self.domain.save(Path(self.job.working_dir), STAGED)
        except HypervisorError as exc:
            self._recover_after_failed_save()
            raise as_gahp_error(command, exc, "save") from exc

    def _commit(self, state: SavedState) -> None:
        """Rename the staged files into place and hand them to the job user."""
        working_dir = Path(self.job.working_dir)
        for name in state.files:
            staged = working_dir / (name + STAGED)
            if staged.exists():
                os.replace(staged, working_dir / name)
            give_to(working_dir / name, self.job.owner_uid, self.job.owner_gid)
        fsync_dir(working_dir)

    def _unstage(self, state: SavedState) -> None:
        for name in state.files:
            (Path(self.job.working_dir) / (name + STAGED)).unlink(missing_ok=True)

    def _undo_save(self, state: SavedState) -> None:
        """The save worked but its files cannot be put in place (a full
        filesystem): the domain is gone, so the guest comes back from what was
        staged - or its state is lost - and the staged files go."""
        working_dir = Path(self.job.working_dir)
        names = tuple(n + STAGED if (working_dir / (n + STAGED)).exists() else n for n in state.files)
        try:
            self.domain = self.hypervisor.restore(self.job, SavedState(names, state.keeps, state.record))
        except HypervisorError as exc:
            log.get().error("save_lost_domain", detail=f"the saved guest does not restore: {exc.message}")
            self._set(VmState.STOPPED)
        else:
            log.get().warning("save_undone", detail="the saved state could not be committed; the guest runs on")
            self._set(VmState.RUNNING)
        finally:
            self._unstage(state)

    def resume(self) -> None:
        if self.soft_suspended:
            self._unpause()
            return
        if self.state is VmState.RUNNING:
            return
        if self.state is not VmState.SUSPENDED or self.saved is None:
            raise GahpError(tokens.VM_INVALID_OPERATION, f"resume of a {self.state.value} VM")
        state = self.saved
        for name in state.files:
            if not os.access(Path(self.job.working_dir) / name, os.R_OK):
                raise GahpError(tokens.VM_INVALID_SUSPEND_FILE, f"cannot read {name}")
        committed = (Path(self.job.working_dir) / checkpoint.MANIFEST).exists()
        before = set(os.listdir(self.job.working_dir))
        try:
            # A checkpoint stays whole: the resumed guest writes to new layers.
            job = self.hypervisor.prepare(self.job, state) if committed else self.job
            self.domain = self.hypervisor.restore(job, state)
        except HypervisorError as exc:
            remove_new_vm_files(self.job.working_dir, before)  # a retry prepares its own
            raise as_gahp_error("CONDOR_VM_RESUME", exc, "restore") from exc
        self.job, self.saved = job, None
        if not committed:
            for name in state.files:  # as the C++ unlinks its save file after a resume
                (Path(self.job.working_dir) / name).unlink(missing_ok=True)
        self._set(VmState.RUNNING)

    def checkpoint(self) -> None:
        if self.state is VmState.STOPPED:
            raise GahpError(tokens.VM_INVALID_OPERATION, "checkpoint of a stopped VM")
        if not self.job.checkpoint:
            raise GahpError(tokens.VM_NO_SUPPORT_CHECKPOINT, "the job did not ask for vm_checkpoint")
        if Capability.CHECKPOINT not in self.caps:
            raise GahpError(tokens.VM_NO_SUPPORT_CHECKPOINT, "this VM's state cannot be checkpointed "
                            "(Xen HVM guests need XEN_ALLOW_HARDWARE_VT_SUSPEND)")
        working_dir = Path(self.job.working_dir)
        manifest = working_dir / checkpoint.MANIFEST
        staged_manifest = working_dir / (checkpoint.MANIFEST + ".next")
        fresh = self.state is VmState.RUNNING
        state = self._save("CONDOR_VM_CHECKPOINT") if fresh else self.saved
        assert state is not None  # SUSPENDED always has its saved state
        try:
            # The state and the manifest are complete on disk before either
            # replaces anything: a full filesystem or an eviction midway
            # leaves the previous checkpoint as it was.
            checkpoint.write_manifest(self.job, state, STAGED if fresh else "", staged_manifest)
            self._commit(state)
            os.replace(staged_manifest, manifest)
            fsync_dir(working_dir)
            write_atomically(self.timestamp_file, f"{int(time.time())}\n".encode())
            for path in (self.timestamp_file, manifest):
                give_to(path, self.job.owner_uid, self.job.owner_gid)
        except (GahpError, OSError, ValueError) as exc:
            staged_manifest.unlink(missing_ok=True)
            if fresh:
                self._undo_save(state)
            raise GahpError(tokens.VM_CANNOT_CREATE_CKPT_FILES, f"checkpoint: {exc}") from exc
        self.saved = state
        self._set(VmState.SUSPENDED)

    def _recover_after_failed_save(self) -> None:
        """A save that failed after the guest stopped: libvirt resumes it when it
        can; if the domain is gone the guest's state is lost with it."""
        try:
            state = self.domain.info().state
        except HypervisorError:
            return
        if state is DomainState.GONE:
            log.get().error("save_lost_domain", detail="the domain ended during a failed save")
            self._set(VmState.STOPPED)
        elif state is DomainState.PAUSED:
            with contextlib.suppress(GahpError):
                self._unpause()

    def stop(self, grace_seconds: float) -> None:
        """CONDOR_VM_STOP: ask the guest to power off, destroy it after the grace."""
        if self.state is VmState.STOPPED:
            self.release()
            return
        try:
            if self.state is VmState.RUNNING:
                if self.soft_suspended:
                    self._unpause()
                self.domain.shutdown(grace_seconds)
        except HypervisorError as exc:
            try:
                self.domain.destroy()
            except HypervisorError:
                pass
            raise as_gahp_error("CONDOR_VM_STOP", exc, "shutdown") from exc
        finally:
            self._set(VmState.STOPPED)
            self.release()

    def release(self) -> None:
        """The gahp is done with this VM (STOP, or QUIT after it ended): tidy
        the working dir so that only the job's real output goes back."""
        if self.job.cdrom_built:  # ours, rebuilt from the job's files: never output
            Path(self.job.cdrom_built).unlink(missing_ok=True)
        if not self.self_shutdown:
            return
        # The guest ended by itself: the job is done, its checkpoint is stale.
        checkpoint.discard(self.job.working_dir)
        for iso in Path(self.job.working_dir).glob("vmgahp-cdrom*.iso"):
            iso.unlink(missing_ok=True)
        if self.job.no_output_vm:
            self._drop_vm_output()
        else:
            self.hypervisor.finish(self.job)

    def destroy(self) -> None:
        """Used at QUIT, EOF and SIGTERM: the VM must not outlive the gahp."""
        try:
            self.domain.destroy()
        finally:
            self._set(VmState.STOPPED)

    # --------------------------------------------------------------- helpers
    def _unpause(self) -> None:
        try:
            self.domain.unpause()
        except HypervisorError as exc:
            raise as_gahp_error("unpause", exc, "unpause") from exc
        self._set(VmState.RUNNING, soft=False)

    def _drop_vm_output(self) -> None:
        """``vm_no_output_vm``: the job wants none of the VM's files back.

        The C++ deletes the whole working directory, HTCondor's own files
        included (Q19); vmgahp deletes only the VM's writable images that live
        there (transferred disks, and what the driver made for them)."""
        working_dir = Path(self.job.working_dir)
        for disk in self.job.disks:
            path = Path(disk.path)
            if path.parent == working_dir and (disk.writable or disk.is_cdrom) and path.exists():
                path.unlink()
                log.get().info("output_dropped", path=path.name, detail="vm_no_output_vm")
        self.hypervisor.finish(self.job, output=False)
