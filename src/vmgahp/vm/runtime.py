"""Executes VM requests off the command loop.

* A bounded pool of worker threads (``VM_GAHP_WORKERS``) runs the requests.
* Mutating commands for one VM run one at a time, in arrival order (a FIFO
  per VM id); STATUS and GETPID never wait behind them - they run on their
  own reader thread (:mod:`read_lane`) - so a STATUS is answered while a
  CHECKPOINT of the same VM is still saving memory.
* Every operation runs under a deadline (``VM_GAHP_CALL_TIMEOUT``); past it
  the request fails with ``VMGAHP_ERR_INTERNAL`` and the gahp lives on. A
  START that completes after its deadline has its VM destroyed.
* Every domain name this gahp started is remembered, so QUIT, EOF and SIGTERM
  can destroy them all.

Results are handed to ``report(request_id, ok, text)``, which the daemon
feeds to the session.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from vmgahp import log
from vmgahp.drivers.base import Hypervisor
from vmgahp.errors import GahpError
from vmgahp.job.access import JobUser
from vmgahp.protocol import tokens
from vmgahp.protocol.session import Request
from vmgahp.settings import Settings
from vmgahp.vm.deadline import DeadlineCall, DeadlineExceeded
from vmgahp.vm.lifecycle import CpuUtilization, VirtualMachine
from vmgahp.vm.read_lane import Read, ReadLane

Report = Callable[[int, bool, str], None]
HypervisorFactory = Callable[[str, Settings], Hypervisor]

READ_ONLY = frozenset({"CONDOR_VM_STATUS", "CONDOR_VM_GETPID"})
# The commands that change a VM's state, each one VirtualMachine transition
# (STOP also forgets the VM; START, STATUS and GETPID are answered above them).
TRANSITIONS: dict[str, Callable[[VirtualMachine], None]] = {
    "CONDOR_VM_SUSPEND": VirtualMachine.suspend,
    "CONDOR_VM_SOFT_SUSPEND": VirtualMachine.soft_suspend,
    "CONDOR_VM_RESUME": VirtualMachine.resume,
    "CONDOR_VM_CHECKPOINT": VirtualMachine.checkpoint,
}
CLEANUP_DEADLINE = 15.0
MAX_BACKLOG = 64  # unfinished requests; the starter never has more than a few


class Runtime:
    def __init__(
        self,
        settings: Settings,
        vm_type: str,
        user: JobUser | None,
        report: Report,
        hypervisor_factory: HypervisorFactory,
    ) -> None:
        self.settings = settings
        self.vm_type = vm_type
        self.user = user
        self._report = report
        self._factory = hypervisor_factory
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="vmgahp-worker")
        # Its watchdog answers a hung read within a tick of its deadline.
        self._reads = ReadLane(tick=min(1.0, max(0.01, settings.call_timeout / 20)))
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._hypervisor: Hypervisor | None = None
        self._vms: dict[int, VirtualMachine] = {}
        self._queues: dict[int, deque[Request]] = {}
        self._names: set[str] = set()
        self._next_vm_id = 1
        self._backlog = 0
        self._accepted: dict[int, float] = {}
        self._starting = 0
        self._closing = False
        self._prepared = False
        self._cpu = CpuUtilization()

    # ------------------------------------------------------------ dispatching
    def submit(self, request: Request) -> None:
        """Queue ``request``; its deadline runs from now, not from when a
        worker is free. Past ``MAX_BACKLOG`` unfinished requests (a hung
        hypervisor and a client that keeps asking) a request is answered at
        once with a failure instead of waiting: answered, never dropped."""
        accepted = time.monotonic()
        with self._lock:
            overloaded = self._backlog >= MAX_BACKLOG or self._closing
            if not overloaded:
                self._backlog += 1
                self._accepted[request.request_id] = accepted
        if overloaded:
            with log.bound(req_id=request.request_id, command=request.command):
                log.get().error("request_refused", token=tokens.INTERNAL,
                                detail=f"{MAX_BACKLOG} requests are still unfinished (or the gahp is ending)")
            self._report(request.request_id, False, tokens.INTERNAL)
            return
        if request.command in READ_ONLY:
            self._reads.submit(Read(functools.partial(self._execute, request), functools.partial(self._expire, request),
                                    accepted + self.settings.call_timeout))
            return
        if request.command == "CONDOR_VM_START":
            self._pool.submit(self._execute, request)
            return
        with self._lock:
            queue = self._queues.get(request.vm_id)
            if queue is not None:
                queue.append(request)  # the VM's drain loop will pick it up
                return
            self._queues[request.vm_id] = deque([request])
        self._pool.submit(self._drain, request.vm_id)

    def _drain(self, vm_id: int) -> None:
        """Run one VM's mutating requests in order until its queue is empty."""
        while True:
            with self._lock:
                queue = self._queues[vm_id]
                if not queue:
                    del self._queues[vm_id]
                    return
                request = queue.popleft()
            self._execute(request)

    def _execute(self, request: Request) -> None:
        """Run one request and report its result, unless the read lane's
        watchdog has answered it already."""
        ok, text = False, tokens.INTERNAL
        try:
            with log.bound(**_ids(request), command=request.command):
                ok, text = self._run(request)
        except BaseException:  # noqa: BLE001 - a bug must not lose the answer
            with contextlib.suppress(Exception):
                log.get().exception("request_crashed", req_id=request.request_id, token=tokens.INTERNAL)
            ok, text = False, tokens.INTERNAL
        finally:
            answered = self._finish(request.request_id, ok, text)
            with contextlib.suppress(Exception), log.bound(**_ids(request), command=request.command):
                if not answered:
                    log.get().info("late_result_dropped", result=text or "NULL",
                                   detail="its deadline had passed and its failure was answered")
                elif ok:
                    log.get().info("request_done", result=text or "NULL")

    def _expire(self, request: Request, why: str) -> None:
        """A read the lane gave up on: answered with a token, if still open."""
        if self._finish(request.request_id, False, tokens.INTERNAL):
            with log.bound(**_ids(request), command=request.command):
                log.get().error("request_timed_out", token=tokens.INTERNAL, detail=why)

    def _finish(self, request_id: int, ok: bool, text: str) -> bool:
        """Report a result; the first of two for one request wins."""
        with self._lock:
            if self._accepted.pop(request_id, None) is None:
                return False
            self._backlog -= 1
        self._report(request_id, ok, text)
        return True

    def _run(self, request: Request) -> tuple[bool, str]:
        logger = log.get()
        with self._lock:
            accepted = self._accepted.get(request.request_id, time.monotonic())
        timeout = accepted + self.settings.call_timeout - time.monotonic()
        if timeout <= 0:
            logger.error("request_timed_out", token=tokens.INTERNAL,
                         detail=f"waited {self.settings.call_timeout:g} s for a worker"
                                " (the hypervisor is slow or hung)")
            return False, tokens.INTERNAL
        is_start = request.command == "CONDOR_VM_START"
        try:
            if request.command in READ_ONLY:
                outcome = self._operate(request)  # its lane keeps the deadline
            else:
                call = DeadlineCall(lambda: self._operate(request), name=f"vmgahp-req-{request.request_id}")
                outcome = call.wait(timeout, on_late=self._destroy_late_vm if is_start else None)
        except DeadlineExceeded as exc:
            logger.error("request_timed_out", token=tokens.INTERNAL, detail=str(exc))
            return False, tokens.INTERNAL
        except GahpError as exc:
            logger.warning("request_failed", token=exc.token, detail=exc.detail)
            return False, exc.token
        except Exception as exc:  # a bug or an unexpected library error
            logger.exception("request_crashed", token=tokens.INTERNAL, detail=repr(exc))
            return False, tokens.INTERNAL
        if isinstance(outcome, VirtualMachine):
            return self._register(outcome)
        return True, outcome

    def prepare_for_start(self) -> None:
        """Load the job model, ClassAd library and hypervisor connection in the
        background while the starter is still sending the job ad, so START
        does not pay for them. Not done at start-up: an idle gahp stays small."""
        if self._prepared:
            return
        self._prepared = True

        def warm() -> None:
            try:
                from vmgahp.job import ad_reader, model  # noqa: F401 - imported now, before the first START needs them

                ad_reader.prepare()  # its interpreter and classad2 load while the ad arrives
                from vmgahp.vm import cdrom  # noqa: F401 - as model

                hypervisor = self._get_hypervisor()
                hypervisor.network_plan()
                hypervisor.warm_up()
            except Exception as exc:  # START will report it properly
                log.get().info("prepare_failed", detail=repr(exc))

        def bounded() -> None:
            # A hung hypervisor must not keep a worker for ever.
            with contextlib.suppress(DeadlineExceeded):
                DeadlineCall(warm, name="vmgahp-prepare").wait(self.settings.call_timeout)

        self._pool.submit(bounded)

    # ------------------------------------------------------------- operations
    def _operate(self, request: Request) -> str | VirtualMachine:
        command = request.command
        if command == "CONDOR_VM_START":
            return self._start(request)
        vm = self._vms.get(request.vm_id)
        if command == "CONDOR_VM_STATUS":
            # An unknown VM is a success (spec 3.10): it lets a vacate finish.
            return vm.status() if vm is not None else "STATUS=Stopped"
        if vm is None:
            raise GahpError(tokens.VM_NOT_FOUND, f"no VM with id {request.vm_id}")
        if command == "CONDOR_VM_GETPID":
            return str(vm.pid())
        with vm.busy_with(command):
            if command == "CONDOR_VM_STOP":
                try:
                    vm.stop(self.settings.shutdown_timeout)
                finally:
                    # The VM is forgotten whether or not the shutdown worked.
                    with self._lock:
                        self._vms.pop(vm.vm_id, None)
            else:
                TRANSITIONS[command](vm)
        return ""

    def _start(self, request: Request) -> VirtualMachine:
        from vmgahp.vm import start

        ad = start.read_ad(request.ad_lines, request.vm_type, self.vm_type)
        with self._lock:
            vm_id = self._next_vm_id  # consumed even if the start fails (C++)
            self._next_vm_id += 1
        with log.bound(vm_id=vm_id):
            hypervisor = self._get_hypervisor()
            with self._lock:
                self._starting += 1
            try:
                job, domain, restored = start.start(ad, hypervisor, self.settings, self.user, self._may_boot)
                with self._lock:
                    # Remembered only once it is ours: a failed create may be
                    # a name clash with another job's live domain.
                    self._names.add(job.name)
            finally:
                with self._lock:
                    self._starting -= 1
                    self._idle.notify_all()
            log.get().info("vm_started", name=job.name, memory_mib=job.memory_mib, vcpus=job.vcpus,
                           restored=restored)
            return VirtualMachine(vm_id, job, hypervisor, domain, self._cpu)

    def _may_boot(self) -> None:
        with self._lock:
            if self._closing:
                raise GahpError(tokens.INTERNAL, "the gahp is shutting down")

    def _register(self, vm: VirtualMachine) -> tuple[bool, str]:
        with self._lock:
            if not self._closing:
                self._vms[vm.vm_id] = vm
                return True, str(vm.vm_id)
        self._destroy_quietly(vm)
        return False, tokens.INTERNAL

    def _destroy_late_vm(self, outcome: Any, error: BaseException | None) -> None:
        if isinstance(outcome, VirtualMachine) and self._destroy_quietly(outcome):
            log.get().warning("late_start_destroyed", name=outcome.name,
                              detail="the VM came up after its START had timed out")

    def _destroy_quietly(self, vm: VirtualMachine) -> bool:
        try:
            vm.destroy()
            return True
        except Exception as exc:
            log.get().error("destroy_failed", name=vm.name, detail=str(exc))
            return False

    def _get_hypervisor(self) -> Hypervisor:
        with self._lock:
            if self._hypervisor is None:
                self._hypervisor = self._factory(self.vm_type, self.settings)
            return self._hypervisor

    # ----------------------------------------------------------------- ending
    def close(self) -> None:
        """Destroy every VM this gahp started; bounded in time. Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            # A START inside hypervisor.create may be about to produce a VM.
            self._idle.wait_for(lambda: self._starting == 0, timeout=CLEANUP_DEADLINE)
            names = sorted(self._names)
            hypervisor = self._hypervisor
            vms = list(self._vms.values())
            self._vms.clear()
        for vm in vms:
            with contextlib.suppress(Exception):
                vm.release()
        if hypervisor is not None and names:
            calls = [
                (name, DeadlineCall(functools.partial(hypervisor.destroy_by_name, name), name="vmgahp-cleanup",
                                    essential=True))
                for name in names
            ]
            end = time.monotonic() + CLEANUP_DEADLINE  # one deadline for all: they run side by side
            for name, call in calls:
                with contextlib.suppress(Exception):
                    if call.wait(max(0.0, end - time.monotonic())):
                        log.get().info("vm_destroyed", name=name)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._reads.close()
        if hypervisor is not None:
            with contextlib.suppress(Exception):
                hypervisor.close()


def _ids(request: Request) -> dict[str, Any]:
    """The log ids of a request (a START has no VM id yet)."""
    if request.command == "CONDOR_VM_START":
        return {"req_id": request.request_id}
    return {"req_id": request.request_id, "vm_id": request.vm_id}
