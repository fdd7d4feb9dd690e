"""The VM layer over the in-memory driver: jobs, VMs and a Runtime with a recorder.

Shared by tests/unit/test_vm_lifecycle.py and tests/unit/test_runtime_scheduling.py.
Waits are on events with generous timeouts, never fixed sleeps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from pathlib import Path
from typing import Any

from gahp_process import job_ad
from helpers import settings
from vmgahp.drivers.fake import FakeHypervisor
from vmgahp.job.model import Disk, VmJob
from vmgahp.protocol.session import Request
from vmgahp.vm.lifecycle import CpuUtilization, VirtualMachine
from vmgahp.vm.runtime import Runtime

WAIT = 10.0  # generous: an answer that takes this long is a failure, not a slow host
VM_NAME = "alice_example.org_42.0"  # what job_ad()'s User, ClusterId and ProcId make


def blank_disk(work: Path, name: str = "disk.img") -> Path:
    path = work / name
    path.write_bytes(b"\0" * 4096)
    return path


def make_job(work: Path, **fields: Any) -> VmJob:
    """A checkpointable job with one transferred writable disk."""
    values: dict[str, Any] = dict(
        vm_type="kvm", name=VM_NAME, working_dir=str(work), memory_mib=64, checkpoint=True,
        disks=(Disk(path=str(blank_disk(work)), device="vda", permission="w", format="raw", transferred=True),),
    )
    values.update(fields)
    return VmJob(**values)


def started_vm(hv: FakeHypervisor, job: VmJob, vm_id: int = 1) -> VirtualMachine:
    """A RUNNING VM as START leaves it (disks prepared, domain created)."""
    job = hv.prepare(job, None)
    return VirtualMachine(vm_id, job, hv, hv.create(job), CpuUtilization())


def snapshot(work: Path) -> dict[str, str]:
    """Every file of the working dir by name -> SHA-256 of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(work.iterdir()) if p.is_file()}


class Recorder:
    """A Runtime's ``report``: every result, and an event per request id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.results: list[tuple[int, bool, str]] = []
        self._events: dict[int, threading.Event] = {}

    def _event(self, request_id: int) -> threading.Event:
        with self._lock:
            return self._events.setdefault(request_id, threading.Event())

    def __call__(self, request_id: int, ok: bool, text: str) -> None:
        with self._lock:
            self.results.append((request_id, ok, text))
        self._event(request_id).set()

    def wait(self, request_id: int, timeout: float = WAIT) -> tuple[bool, str]:
        assert self._event(request_id).wait(timeout), f"request {request_id} got no answer in {timeout} s"
        return self.answer(request_id)

    def answered(self, request_id: int) -> bool:
        return self._event(request_id).is_set()

    def answer(self, request_id: int) -> tuple[bool, str]:
        with self._lock:
            found = [(ok, text) for rid, ok, text in self.results if rid == request_id]
        assert len(found) == 1, f"request {request_id} answered {len(found)} times: {found}"
        return found[0]

    def order(self) -> list[int]:
        with self._lock:
            return [rid for rid, _, _ in self.results]


class Rig:
    """A Runtime running the fake; request ids are handed out from 2 up."""

    def __init__(self, work: Path, **overrides: Any) -> None:
        knobs = {key: overrides.pop(key) for key in list(overrides) if key.isupper()}
        self.settings = dataclasses.replace(settings("kvm", **knobs), **overrides)
        self.work = work
        self.hv = FakeHypervisor(self.settings, "kvm")
        self.report = Recorder()
        self.runtime = Runtime(self.settings, "kvm", None, self.report, hypervisor_factory=lambda _t, _s: self.hv)
        self._next_id = 2

    def submit(self, command: str, vm_id: int = 0, ad: list[str] | None = None) -> int:
        request_id, self._next_id = self._next_id, self._next_id + 1
        if command == "CONDOR_VM_START":
            if ad is None and not (self.work / "disk.img").exists():
                blank_disk(self.work)
            request = Request(request_id, command, vm_type="kvm", ad_lines=tuple(ad or job_ad(self.work)))
        else:
            request = Request(request_id, command, vm_id=vm_id)
        self.runtime.submit(request)
        return request_id

    def call(self, command: str, vm_id: int = 0, ad: list[str] | None = None) -> tuple[bool, str]:
        return self.report.wait(self.submit(command, vm_id, ad))

    def start(self, work: Path | None = None, **attributes: str) -> int:
        """START a job in ``work`` (a disk.img is made there); its VM id."""
        work = work or self.work
        if not (work / "disk.img").exists():
            blank_disk(work)
        ok, text = self.call("CONDOR_VM_START", ad=job_ad(work, **attributes))
        assert ok, text
        return int(text)

    def close(self) -> None:
        self.hv.faults.clear()
        self.runtime.close()
