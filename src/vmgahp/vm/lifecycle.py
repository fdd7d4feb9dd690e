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

from vmgahp.vm import checkpoint
from vmgahp import errors, log
from vmgahp.vm.checkpoint import fsync_dir, fsync_file, write_atomically
from vmgahp.drivers.base import Domain, DomainState, Hypervisor, HypervisorError
from vmgahp.errors import GahpError
from vmgahp.protocol.status import format_status

if TYPE_CHECKING:
    from vmgahp.job.model import VmJob  # pydantic: loaded by the first START, not at start-up

SAVE_FILE = checkpoint.MEMORY  # the C++ name, kept: admins and scripts know it


_SAVING = frozenset({"CONDOR_VM_SUSPEND", "CONDOR_VM_CHECKPOINT"})


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


def _hypervisor_error(token: str, action: str, exc: Exception) -> GahpError:
    return GahpError(token, f"{action} failed: {exc}")


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
        self.description = ""  # the domain XML as of the last save (for checkpoints)

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def save_file(self) -> Path:
        return Path(self.job.working_dir) / SAVE_FILE

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
            raise _hypervisor_error(errors.INTERNAL, "domain lookup", exc) from exc
        if info.state is DomainState.RUNNING:
            utilization = self._cpu.sample(info.cpu_time_ns, info.vcpus)
            return format_status("Running", utilization=utilization, cpu_time=info.cpu_time_ns / 1e9,
                                 memory_kib=info.memory_kib, max_memory_kib=info.max_memory_kib)
        if info.state is DomainState.PAUSED:
            return "STATUS=Suspended"
        # The domain is gone or shut off. While this gahp is saving or
        # restoring it that is expected and not the end of the job.
        if busy in ("CONDOR_VM_SOFT_SUSPEND", "CONDOR_VM_RESUME"):
            return "STATUS=Suspended"
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
            raise GahpError(errors.VM_INVALID_OPERATION, f"soft suspend of a {self.state.value} VM")
        try:
            self.domain.pause()
        except HypervisorError as exc:
            # The C++ falls back to a hard suspend when pausing fails.
            log.get().warning("pause_failed", detail=str(exc), fallback="hard suspend")
            self.suspend()
            return
        self._set(VmState.RUNNING, soft=True)

    def suspend(self) -> None:
        if self.state is VmState.SUSPENDED:
            return
        if self.state is not VmState.RUNNING:
            raise GahpError(errors.VM_INVALID_OPERATION, f"suspend of a {self.state.value} VM")
        self._check_xen_hvm_suspend(errors.VM_NO_SUPPORT_SUSPEND)
        partial, _disks = self._save_memory()
        try:
            os.replace(partial, self.save_file)
            fsync_dir(self.save_file.parent)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise _hypervisor_error(errors.INTERNAL, "save", exc) from exc
        # A checkpoint that named the memory file is superseded by this save.
        (Path(self.job.working_dir) / checkpoint.MANIFEST).unlink(missing_ok=True)
        self._chown_to_owner(self.save_file)
        self._set(VmState.SUSPENDED)

    def _save_memory(self) -> tuple[Path, list]:
        """Save the VM's memory to ``xen.mem.ckpt.partial`` (synced); return it
        and the disks the domain was using. The VM is no longer running."""
        if self.soft_suspended:
            self._unpause()
        partial = self.save_file.with_name(self.save_file.name + ".partial")
        try:
            self.description = self.domain.describe()
            disks = self.domain.disks(self.description)
            partial.unlink(missing_ok=True)
            self.domain.save(partial)
            fsync_file(partial)
        except (HypervisorError, OSError) as exc:
            partial.unlink(missing_ok=True)
            raise _hypervisor_error(errors.INTERNAL, "save", exc) from exc
        return partial, disks

    def resume(self) -> None:
        if self.soft_suspended:
            self._unpause()
            return
        if self.state is VmState.RUNNING:
            return
        if self.state is not VmState.SUSPENDED:
            raise GahpError(errors.VM_INVALID_OPERATION, f"resume of a {self.state.value} VM")
        save_file = self.save_file
        if not os.access(save_file, os.R_OK):
            raise GahpError(errors.VM_INVALID_SUSPEND_FILE, f"cannot read {save_file}")
        committed = (Path(self.job.working_dir) / checkpoint.MANIFEST).exists()
        job = self.job
        if committed:
            # The checkpoint stays whole: the resumed guest writes to new layers.
            from vmgahp.drivers.libvirt import overlays

            job = overlays.prepare(job, tops={d.device: d.path for d in job.disks if overlays.needs_overlay(d)})
        try:
            self.domain = self.hypervisor.restore(job, save_file)
        except HypervisorError as exc:
            raise _hypervisor_error(errors.INTERNAL, "restore", exc) from exc
        self.job = job
        if not committed:
            save_file.unlink(missing_ok=True)  # as the C++ does after a resume
        self._set(VmState.RUNNING)

    def checkpoint(self) -> None:
        if self.state is VmState.STOPPED:
            raise GahpError(errors.VM_INVALID_OPERATION, "checkpoint of a stopped VM")
        if not self.job.checkpoint:
            raise GahpError(errors.VM_NO_SUPPORT_CHECKPOINT, "the job did not ask for vm_checkpoint")
        self._check_xen_hvm_suspend(errors.VM_NO_SUPPORT_CHECKPOINT)
        working_dir = Path(self.job.working_dir)
        manifest = working_dir / checkpoint.MANIFEST
        staged = working_dir / (checkpoint.MANIFEST + ".next")
        try:
            if self.state is VmState.RUNNING:
                memory, disks = self._save_memory()
            else:  # saved by an earlier SUSPEND: that save is the state
                memory, disks = self.save_file, self.domain.disks(self.description)
            # Both the memory state and the manifest are complete on disk
            # before either replaces anything: a full filesystem or an
            # eviction midway leaves the previous checkpoint as it was.
            checkpoint.write_manifest(self.job, memory, checkpoint.sha256_of(memory), disks,
                                      self.description, target=staged)
            if memory != self.save_file:
                os.replace(memory, self.save_file)
            os.replace(staged, manifest)
            fsync_dir(working_dir)
            write_atomically(self.timestamp_file, f"{int(time.time())}\n".encode())
            for path in (self.save_file, self.timestamp_file, manifest):
                self._chown_to_owner(path)
        except (GahpError, OSError, ValueError) as exc:
            staged.unlink(missing_ok=True)
            if self.state is VmState.RUNNING:
                with contextlib.suppress(OSError):
                    (working_dir / (checkpoint.MEMORY + ".partial")).unlink()
                self._recover_after_failed_save()
            raise GahpError(errors.VM_CANNOT_CREATE_CKPT_FILES, f"checkpoint: {exc}") from exc
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
            raise _hypervisor_error(errors.INTERNAL, "shutdown", exc) from exc
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
        from vmgahp.drivers.libvirt import overlays

        checkpoint.discard(self.job.working_dir)
        for iso in Path(self.job.working_dir).glob("vmgahp-cdrom*.iso"):
            iso.unlink(missing_ok=True)
        if self.job.no_output_vm:
            self._drop_vm_output()
        else:
            overlays.commit_down(self.job)

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
            raise _hypervisor_error(errors.INTERNAL, "unpause", exc) from exc
        self._set(VmState.RUNNING, soft=False)

    def _check_xen_hvm_suspend(self, token: str) -> None:
        xen = self.job.xen
        if xen is not None and xen.mode == "vmx" and not self.hypervisor.settings.xen_allow_hardware_vt_suspend:
            raise GahpError(token, "Xen HVM guests need XEN_ALLOW_HARDWARE_VT_SUSPEND")

    def _chown_to_owner(self, path: Path) -> None:
        if self.job.owner_uid is None or os.geteuid() != 0:
            return
        try:
            os.chown(path, self.job.owner_uid, self.job.owner_gid or self.job.owner_uid)
        except OSError as exc:
            log.get().warning("chown_failed", path=str(path), detail=str(exc))

    def _drop_vm_output(self) -> None:
        """``vm_no_output_vm``: the job wants none of the VM's files back.

        The C++ deletes the whole working directory, HTCondor's own files
        included (Q19); vmgahp deletes only the VM's writable images that live
        there (transferred disks, every overlay layer)."""
        from vmgahp.drivers.libvirt import overlays

        working_dir = Path(self.job.working_dir)
        doomed = [Path(d.path) for d in self.job.disks
                  if Path(d.path).parent == working_dir and (d.writable or d.is_cdrom)]
        for disk in self.job.disks:
            doomed += overlays.generations(self.job.working_dir, disk.device).values()
        for path in doomed:
            if path.exists():
                path.unlink()
                log.get().info("output_dropped", path=path.name, detail="vm_no_output_vm")
