"""Runtime over the in-memory driver: order, concurrency, deadlines, bounds, ending.

The fake's gates stand for a hung hypervisor (a call waits until the test
releases it), so each test knows which call is in flight without sleeping.
Time bounds are generous; where a test checks that something does *not*
happen it waits a short while for it, which can only miss a fault, never
invent one.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fake_vm import VM_NAME, WAIT, Rig, snapshot
from gahp_process import job_ad
from helpers import wait_until
from vmgahp.drivers.base import HostError, JobImageError
from vmgahp.drivers.fake import MEMORY
from vmgahp.protocol import tokens
from vmgahp.vm import checkpoint as ckpt
from vmgahp.vm import deadline, runtime

NOT_YET = 0.3  # how long a test waits for something that must not happen


@pytest.fixture
def rigs(tmp_path: Path):
    made: list[Rig] = []

    def make(**overrides) -> Rig:
        made.append(Rig(tmp_path, **overrides))
        return made[-1]

    yield make
    for rig in made:
        rig.close()


def other_job(rig: Rig, cluster: int) -> int:
    work = rig.work / f"job{cluster}"
    work.mkdir()
    return rig.start(work, ClusterId=str(cluster))


# ------------------------------------------------------------------- order
def test_mutating_commands_of_one_vm_run_in_arrival_order(rigs) -> None:
    rig = rigs()
    vm = rig.start()
    gate = rig.hv.faults.block("pause")
    ids = [rig.submit(command, vm) for command in
           ("CONDOR_VM_SOFT_SUSPEND", "CONDOR_VM_RESUME", "CONDOR_VM_SUSPEND", "CONDOR_VM_RESUME")]
    assert gate.wait_entered(1)
    assert not gate.wait_entered(2, NOT_YET)
    assert not any(rig.report.answered(i) for i in ids)
    assert rig.hv.count("unpause") == rig.hv.count("save") == 0  # nothing overtook the pause
    gate.release()
    assert [rig.report.wait(i) for i in ids] == [(True, "")] * 4
    assert rig.report.order()[-4:] == ids
    ops = [c.op for c in rig.hv.calls if c.op in ("pause", "unpause", "save", "restore")]
    assert ops == ["pause", "unpause", "save", "restore"]


def test_status_and_getpid_do_not_wait_behind_a_checkpoint(rigs) -> None:
    rig = rigs()
    vm = rig.start(JobVMCheckpoint="true")
    gate = rig.hv.faults.block("save")
    checkpointing = rig.submit("CONDOR_VM_CHECKPOINT", vm)
    assert gate.wait_entered(1)
    assert rig.call("CONDOR_VM_STATUS", vm) == (True, "STATUS=Suspended")  # saving: the guest is stopped
    ok, pid = rig.call("CONDOR_VM_GETPID", vm)
    assert ok and int(pid) > 0
    assert not rig.report.answered(checkpointing)
    gate.release()
    assert rig.report.wait(checkpointing) == (True, "")
    assert rig.call("CONDOR_VM_STATUS", vm) == (True, "STATUS=Suspended")


def test_unknown_vm(rigs) -> None:
    rig = rigs()
    assert rig.call("CONDOR_VM_STATUS", 7) == (True, "STATUS=Stopped")  # lets a vacate finish (spec 3.10)
    for command in ("CONDOR_VM_GETPID", "CONDOR_VM_SUSPEND", "CONDOR_VM_STOP"):
        assert rig.call(command, 7) == (False, tokens.VM_NOT_FOUND)


# ------------------------------------------------------------- concurrency
@pytest.mark.parametrize("workers", [2, 4])
def test_vms_run_concurrently_up_to_the_workers(workers: int, rigs) -> None:
    rig = rigs(VM_GAHP_WORKERS=workers)
    vms = [other_job(rig, cluster) for cluster in (1, 2, 3)]
    gate = rig.hv.faults.block("pause")
    ids = [rig.submit("CONDOR_VM_SOFT_SUSPEND", vm) for vm in vms]
    in_flight = min(workers, 3)
    assert gate.wait_entered(in_flight)
    assert not gate.wait_entered(in_flight + 1, NOT_YET)
    gate.release()
    assert [rig.report.wait(i) for i in ids] == [(True, "")] * 3
    assert gate.entered == 3


# ---------------------------------------------------------------- deadlines
def test_blocked_call_answers_at_its_deadline(rigs) -> None:
    rig = rigs(call_timeout=0.5)
    vm = rig.start()
    gate = rig.hv.faults.block("pause")
    began = time.monotonic()
    assert rig.call("CONDOR_VM_SOFT_SUSPEND", vm) == (False, tokens.INTERNAL)
    assert 0.45 <= time.monotonic() - began < WAIT
    gate.release()
    assert rig.call("CONDOR_VM_STATUS", vm)[0]  # the gahp lives on


def test_deadline_counts_from_acceptance(rigs) -> None:
    """With one worker, a request queued behind a hung one is answered when
    its own deadline passes, not a whole deadline after a worker took it."""
    rig = rigs(VM_GAHP_WORKERS=1, call_timeout=2.0)
    first, second = other_job(rig, 1), other_job(rig, 2)
    gate = rig.hv.faults.block("pause")
    began = time.monotonic()
    ids = [rig.submit("CONDOR_VM_SOFT_SUSPEND", vm) for vm in (first, second)]
    assert [rig.report.wait(i) for i in ids] == [(False, tokens.INTERNAL)] * 2
    assert time.monotonic() - began < 3.5  # 4 s if the second one's clock started late
    assert gate.entered == 1  # the second never reached the hypervisor
    gate.release()


def test_backlog_is_bounded_and_nothing_is_dropped(rigs, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "MAX_BACKLOG", 3)
    rig = rigs(VM_GAHP_WORKERS=1)
    vm = rig.start()
    gate = rig.hv.faults.block("info")
    held = [rig.submit("CONDOR_VM_STATUS", vm) for _ in range(3)]
    assert gate.wait_entered(1)
    refused = rig.submit("CONDOR_VM_STATUS", vm)
    assert rig.report.wait(refused) == (False, tokens.INTERNAL)  # at once, with the gate still closed
    assert not any(rig.report.answered(i) for i in held)
    gate.release()
    for request in held:
        ok, text = rig.report.wait(request)
        assert ok and text.startswith("STATUS=Running")
    assert sorted(rig.report.order()) == sorted(set(rig.report.order()))  # each answered once


def test_hung_calls_are_capped(rigs, monkeypatch) -> None:
    wait_until(lambda: deadline.hung_calls() == 0)  # earlier tests' released calls end (the count is global)
    base = deadline.hung_calls()
    monkeypatch.setattr(deadline, "MAX_HUNG_CALLS", base + 2)
    rig = rigs(call_timeout=0.3)
    vm = rig.start()
    gate = rig.hv.faults.block("info")
    assert [rig.call("CONDOR_VM_STATUS", vm) for _ in range(2)] == [(False, tokens.INTERNAL)] * 2
    assert deadline.hung_calls() == base + 2 and gate.entered == 2
    assert rig.call("CONDOR_VM_STATUS", vm) == (False, tokens.INTERNAL)
    assert gate.entered == 2 and rig.hv.count("info") == 2  # refused without calling the hypervisor
    gate.release()
    assert wait_until(lambda: deadline.hung_calls() == base)
    assert rig.call("CONDOR_VM_STATUS", vm)[0]


def test_a_hung_status_does_not_hold_up_the_next_one(rigs) -> None:
    """STATUS runs on the read lane: the watchdog answers the hung one at its
    deadline, a new reader serves the other VM, and the late result is no
    second answer."""
    assert wait_until(lambda: deadline.hung_calls() == 0)  # the count is global
    rig = rigs(call_timeout=0.5)
    first, second = other_job(rig, 1), other_job(rig, 2)
    gate = rig.hv.faults.block("info", name="alice_example.org_1.0")
    hung = rig.submit("CONDOR_VM_STATUS", first)
    assert gate.wait_entered(1)
    assert rig.report.wait(hung) == (False, tokens.INTERNAL)
    ok, text = rig.call("CONDOR_VM_STATUS", second)
    assert ok and text.startswith("STATUS=Running"), text
    assert not gate.wait_entered(2, NOT_YET)  # the hung call was not repeated
    gate.release()
    assert wait_until(lambda: deadline.hung_calls() == 0)
    assert rig.report.answer(hung) == (False, tokens.INTERNAL)
    assert rig.report.order().count(hung) == 1


def test_start_that_completes_late_is_destroyed(rigs) -> None:
    rig = rigs(call_timeout=0.3)
    gate = rig.hv.faults.block("create")
    assert rig.call("CONDOR_VM_START") == (False, tokens.INTERNAL)
    gate.release()
    assert wait_until(lambda: rig.hv.count("destroy", VM_NAME) == 1)
    assert rig.hv.running() == []
    assert rig.call("CONDOR_VM_STATUS", 1) == (True, "STATUS=Stopped")  # never registered
    rig.hv.faults.clear()
    assert rig.start() == 2  # the late one consumed id 1, as the C++ does


# --------------------------------------------------------------- failures
@pytest.mark.parametrize(("error", "token"), [
    (JobImageError("not a disk image"), tokens.BAD_IMAGE),
    (HostError("out of memory"), tokens.INTERNAL),
])
def test_failed_start_leaves_the_working_dir_as_it_was(error, token, rigs) -> None:
    rig = rigs()
    (rig.work / "disk.img").write_bytes(b"\0" * 512)
    before = snapshot(rig.work)
    rig.hv.faults.fail("create", error)
    assert rig.call("CONDOR_VM_START", ad=job_ad(rig.work, VMPARAM_vm_Snapshot_Disk="true")) == (False, token)
    assert rig.hv.count("prepare") == 1 and snapshot(rig.work) == before  # its layer went again


def test_read_job_failure_carries_the_disk_token(rigs) -> None:
    rig = rigs()
    assert rig.call("CONDOR_VM_START", ad=job_ad(rig.work, disk="missing.img:vda:w")) == \
        (False, tokens.KVM_INVALID_DISK_PARAM)


def test_status_during_stop_is_not_an_exit_of_the_guest(rigs) -> None:
    """The guest powers off because STOP asked it to: a STATUS meanwhile says
    Stopped, but the job did not end by itself, so its checkpoint stays."""
    rig = rigs()
    vm = rig.start(JobVMCheckpoint="true")
    assert rig.call("CONDOR_VM_CHECKPOINT", vm) == (True, "")
    assert rig.call("CONDOR_VM_RESUME", vm) == (True, "")
    gate = rig.hv.faults.block("shutdown")
    stopping = rig.submit("CONDOR_VM_STOP", vm)
    assert gate.wait_entered(1)
    rig.hv.guest_powers_off(VM_NAME)
    assert rig.call("CONDOR_VM_STATUS", vm) == (True, "STATUS=Stopped")
    gate.release()
    assert rig.report.wait(stopping) == (True, "")
    assert rig.hv.count("finish") == 0
    assert {ckpt.MANIFEST, MEMORY} <= set(snapshot(rig.work))


def test_restart_from_a_checkpoint_in_a_new_gahp_and_directory(rigs, tmp_path: Path) -> None:
    first = rigs()
    vm = first.start(JobVMCheckpoint="true")
    assert first.call("CONDOR_VM_CHECKPOINT", vm) == (True, "")
    assert first.call("CONDOR_VM_STOP", vm) == (True, "")
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for path in first.work.iterdir():
        if path.is_file():
            (moved / path.name).write_bytes(path.read_bytes())
    second = rigs()
    second.work = moved
    vm = second.start(JobVMCheckpoint="true")
    assert second.hv.count("restore") == 1 and second.hv.count("create") == 0
    assert second.call("CONDOR_VM_STATUS", vm)[1].startswith("STATUS=Running")


# ------------------------------------------------------------------ ending
def test_close_destroys_every_vm_it_started(rigs) -> None:
    rig = rigs()
    vms = [other_job(rig, cluster) for cluster in (1, 2)]
    assert rig.call("CONDOR_VM_SUSPEND", vms[1]) == (True, "")  # saved: nothing runs, still destroyed by name
    rig.runtime.close()
    assert rig.hv.running() == [] and rig.hv.closed
    names = sorted(c.name for c in rig.hv.calls if c.op == "destroy_by_name")
    assert names == ["alice_example.org_1.0", "alice_example.org_2.0"]
    calls = len(rig.hv.calls)
    rig.runtime.close()  # idempotent
    assert len(rig.hv.calls) == calls
    assert rig.call("CONDOR_VM_STATUS", vms[0]) == (False, tokens.INTERNAL)  # the gahp is ending


def test_close_is_bounded_when_the_hypervisor_hangs(rigs, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "CLEANUP_DEADLINE", 1.0)
    rig = rigs()
    for cluster in (1, 2, 3):
        other_job(rig, cluster)
    gate = rig.hv.faults.block("destroy")
    began = time.monotonic()
    rig.runtime.close()
    assert time.monotonic() - began < 2.5  # one shared deadline, not one per VM
    assert gate.wait_entered(3)
    gate.release()
    assert wait_until(lambda: rig.hv.running() == [])


def test_close_during_a_start_destroys_its_vm(rigs) -> None:
    rig = rigs()
    gate = rig.hv.faults.block("create")
    starting = rig.submit("CONDOR_VM_START")
    assert gate.wait_entered(1)
    closer = threading.Thread(target=rig.runtime.close)
    closer.start()
    gate.release()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert rig.report.wait(starting) == (False, tokens.INTERNAL)
    assert rig.hv.running() == []
