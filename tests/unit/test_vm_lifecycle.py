"""VirtualMachine over the in-memory driver: every command in every state.

The rules are spec 4.10 and docs/protocol.md "VM states": RUNNING, soft-suspended
(RUNNING + paused), SUSPENDED (saved by this gahp: ``STATUS=Suspended``, the Q2
fix) and STOPPED; which driver calls each transition makes, the capability
checks, and what a failed save, a failed commit and a resume after a
committed checkpoint leave in the working directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fake_vm import VM_NAME, make_job, snapshot, started_vm
from vmgahp.drivers.base import Capability, DomainState, HostError, JobImageError
from vmgahp.drivers.fake import MEMORY, FakeHypervisor
from vmgahp.errors import GahpError
from vmgahp.protocol import tokens
from vmgahp.vm import checkpoint as ckpt
from vmgahp.vm import lifecycle
from vmgahp.vm.lifecycle import STAGED, VirtualMachine, VmState

STATES = ("running", "soft", "suspended", "stopped")


@pytest.fixture
def hv() -> FakeHypervisor:
    fake = FakeHypervisor()
    yield fake
    fake.faults.clear()


def vm_in(state: str, hv: FakeHypervisor, work: Path, **job_fields) -> VirtualMachine:
    vm = started_vm(hv, make_job(work, **job_fields))
    if state == "soft":
        vm.soft_suspend()
    elif state == "suspended":
        vm.suspend()
    elif state == "stopped":
        vm.stop(0)
    return vm


def status_word(vm: VirtualMachine) -> str:
    return vm.status().split()[0].removeprefix("STATUS=")


def staged(work: Path) -> list[str]:
    return sorted(p.name for p in work.iterdir() if p.name.endswith(STAGED) or p.name.endswith(".next"))


# ----------------------------------------------------------------- the matrix
OK = None
INVALID = tokens.VM_INVALID_OPERATION
# (state, command) -> (failure token or OK, STATUS word afterwards)
EXPECTED = {
    ("running", "soft_suspend"): (OK, "Suspended"),
    ("running", "suspend"): (OK, "Suspended"),
    ("running", "resume"): (OK, "Running"),
    ("running", "checkpoint"): (OK, "Suspended"),
    ("running", "stop"): (OK, "Stopped"),
    ("soft", "soft_suspend"): (OK, "Suspended"),
    ("soft", "suspend"): (OK, "Suspended"),
    ("soft", "resume"): (OK, "Running"),
    ("soft", "checkpoint"): (OK, "Suspended"),
    ("soft", "stop"): (OK, "Stopped"),
    ("suspended", "soft_suspend"): (INVALID, "Suspended"),
    ("suspended", "suspend"): (OK, "Suspended"),
    ("suspended", "resume"): (OK, "Running"),
    ("suspended", "checkpoint"): (OK, "Suspended"),
    ("suspended", "stop"): (OK, "Stopped"),
    ("stopped", "soft_suspend"): (INVALID, "Stopped"),
    ("stopped", "suspend"): (INVALID, "Stopped"),
    ("stopped", "resume"): (INVALID, "Stopped"),
    ("stopped", "checkpoint"): (INVALID, "Stopped"),
    ("stopped", "stop"): (OK, "Stopped"),
}
# What the fake hypervisor holds afterwards, by STATUS word.
DOMAIN = {"Running": DomainState.RUNNING, "Stopped": DomainState.GONE}


@pytest.mark.parametrize(("state", "command"), sorted(EXPECTED))
def test_command_in_state(state: str, command: str, hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in(state, hv, tmp_path)
    token, after = EXPECTED[(state, command)]
    run = (lambda: vm.stop(0)) if command == "stop" else getattr(vm, command)
    if token is OK:
        run()
    else:
        with pytest.raises(GahpError) as info:
            run()
        assert info.value.token == token
    assert status_word(vm) == after
    domain = vm.domain.info().state
    if after == "Suspended":  # paused (soft) or saved and gone (hard, checkpoint)
        soft = vm.soft_suspended
        assert domain is (DomainState.PAUSED if soft else DomainState.GONE)
        assert vm.state is (VmState.RUNNING if soft else VmState.SUSPENDED)
    else:
        assert domain is DOMAIN[after]
    assert staged(tmp_path) == []


@pytest.mark.parametrize("state", STATES)
def test_status_in_state(state: str, hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in(state, hv, tmp_path)
    text = vm.status()
    if state == "running":
        assert text.startswith("STATUS=Running CPUUTILIZATION=")
        assert "MEMORY=65536 MAXMEMORY=65536" in text
    else:
        assert text == {"soft": "STATUS=Suspended", "suspended": "STATUS=Suspended", "stopped": "STATUS=Stopped"}[state]


def test_saved_vm_is_suspended_not_stopped(hv: FakeHypervisor, tmp_path: Path) -> None:
    """Q2: the saved domain is gone from the hypervisor, and STATUS does not ask it."""
    vm = vm_in("suspended", hv, tmp_path)
    assert hv.lookup(VM_NAME) is None
    asked = hv.count("info")
    assert [vm.status() for _ in range(3)] == ["STATUS=Suspended"] * 3
    assert hv.count("info") == asked
    assert (tmp_path / MEMORY).is_file() and not (tmp_path / ckpt.MANIFEST).exists()


def test_repeated_commands_do_not_call_the_driver_again(hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in("running", hv, tmp_path)
    vm.resume()
    assert hv.count("unpause") == hv.count("restore") == 0
    vm.soft_suspend()
    vm.soft_suspend()
    assert hv.count("pause") == 1
    vm.suspend()  # unpauses, then saves
    vm.suspend()
    assert hv.count("unpause") == 1 and hv.count("save") == 1


# ------------------------------------------------------------- capabilities
def test_no_save_capability(hv: FakeHypervisor, tmp_path: Path) -> None:
    hv.withhold = Capability.SAVE
    vm = vm_in("running", hv, tmp_path)
    with pytest.raises(GahpError) as info:
        vm.suspend()
    assert info.value.token == tokens.VM_NO_SUPPORT_SUSPEND
    vm.soft_suspend()  # pausing needs no save
    assert vm.soft_suspended and hv.count("save") == 0


def test_no_checkpoint_capability(hv: FakeHypervisor, tmp_path: Path) -> None:
    hv.withhold = Capability.CHECKPOINT
    vm = vm_in("running", hv, tmp_path)
    with pytest.raises(GahpError) as info:
        vm.checkpoint()
    assert info.value.token == tokens.VM_NO_SUPPORT_CHECKPOINT
    assert hv.count("save") == 0 and status_word(vm) == "Running"


def test_job_without_vm_checkpoint(hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in("running", hv, tmp_path, checkpoint=False)
    with pytest.raises(GahpError) as info:
        vm.checkpoint()
    assert info.value.token == tokens.VM_NO_SUPPORT_CHECKPOINT


def test_soft_suspend_falls_back_to_a_hard_suspend(hv: FakeHypervisor, tmp_path: Path) -> None:
    """Without PAUSE, or when pausing fails, as the C++ does."""
    hv.withhold = Capability.PAUSE
    vm = vm_in("running", hv, tmp_path)
    vm.soft_suspend()
    assert vm.state is VmState.SUSPENDED and hv.count("pause") == 0 and hv.count("save") == 1
    hv.withhold = Capability.NONE
    hv.faults.fail("pause", HostError("no"))
    (tmp_path / "other").mkdir()
    other = started_vm(hv, make_job(tmp_path / "other", name="bob_1.0"), vm_id=2)
    other.soft_suspend()
    assert other.state is VmState.SUSPENDED and hv.count("pause") == 1


def test_soft_suspend_without_pause_nor_save(hv: FakeHypervisor, tmp_path: Path) -> None:
    hv.withhold = Capability.PAUSE | Capability.SAVE
    vm = vm_in("running", hv, tmp_path)
    with pytest.raises(GahpError) as info:
        vm.soft_suspend()
    assert info.value.token == tokens.VM_NO_SUPPORT_SUSPEND
    assert status_word(vm) == "Running"


# --------------------------------------------------------------- checkpoints
def test_checkpoint_commits_state_manifest_and_timestamp(hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in("running", hv, tmp_path)
    vm.checkpoint()
    names = set(snapshot(tmp_path))
    assert {MEMORY, ckpt.MANIFEST, ckpt.TIMESTAMP} <= names
    assert staged(tmp_path) == []
    assert ckpt.scan(vm.job, hv).state == vm.saved  # what a restart would find


@pytest.mark.parametrize("leaves", [None, DomainState.PAUSED])
def test_failed_save_keeps_the_previous_checkpoint(leaves, hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in("running", hv, tmp_path)
    vm.checkpoint()
    vm.resume()
    before = snapshot(tmp_path)
    hv.faults.fail("save", HostError("No space left on device"), times=1, leaves=leaves)
    with pytest.raises(GahpError) as info:
        vm.checkpoint()
    assert info.value.token == tokens.VM_CANNOT_CREATE_CKPT_FILES
    assert snapshot(tmp_path) == before and staged(tmp_path) == []
    assert status_word(vm) == "Running" and hv.lookup(VM_NAME).info().state is DomainState.RUNNING


def test_save_that_ends_the_domain_stops_the_vm(hv: FakeHypervisor, tmp_path: Path) -> None:
    """The guest's state is lost with the domain: STOPPED, but not as an exit of its own."""
    vm = vm_in("running", hv, tmp_path)
    hv.faults.fail("save", HostError("qemu died"), leaves=DomainState.GONE)
    with pytest.raises(GahpError):
        vm.suspend()
    assert vm.state is VmState.STOPPED and not vm.self_shutdown and staged(tmp_path) == []


@pytest.mark.parametrize("command", ["suspend", "checkpoint"])
def test_commit_failure_after_a_good_save_keeps_the_guest(command, hv: FakeHypervisor, tmp_path: Path,
                                                          monkeypatch) -> None:
    """The save worked, writing it into place did not (a full filesystem): the
    guest comes back from the staged files and runs on; nothing staged stays."""
    vm = vm_in("running", hv, tmp_path)
    vm.checkpoint()
    vm.resume()
    before = snapshot(tmp_path)

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    target = (lifecycle.checkpoint, "write_manifest") if command == "checkpoint" else (lifecycle.os, "replace")
    monkeypatch.setattr(*target, disk_full)
    with pytest.raises(GahpError) as info:
        getattr(vm, command)()
    monkeypatch.undo()
    assert info.value.token == {"suspend": tokens.INTERNAL, "checkpoint": tokens.VM_CANNOT_CREATE_CKPT_FILES}[command]
    assert staged(tmp_path) == [] and snapshot(tmp_path) == before
    assert vm.state is VmState.RUNNING and status_word(vm) == "Running"
    assert hv.lookup(VM_NAME) is not None


def test_resume_after_a_committed_checkpoint_prepares_new_layers(hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in("running", hv, tmp_path, snapshot_disk=True)
    first_layer = Path(vm.job.disks[0].path).name
    vm.checkpoint()
    frozen = snapshot(tmp_path)
    assert first_layer in vm.saved.keeps
    vm.resume()
    new_layer = Path(vm.job.disks[0].path).name
    assert new_layer != first_layer and new_layer not in frozen
    assert {k: v for k, v in snapshot(tmp_path).items() if k in frozen} == frozen  # the checkpoint stays whole
    assert [c.op for c in hv.calls if c.op in ("prepare", "restore")][-2:] == ["prepare", "restore"]
    vm.checkpoint()  # the next one keeps both layers
    assert {first_layer, new_layer} <= set(vm.saved.keeps)


def test_resume_after_a_plain_suspend_reuses_the_disks(hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in("suspended", hv, tmp_path, snapshot_disk=True)
    disks, prepared = vm.job.disks, hv.count("prepare")
    vm.resume()
    assert hv.count("prepare") == prepared and vm.job.disks == disks
    assert not (tmp_path / MEMORY).exists()  # as the C++ unlinks its save file


def test_resume_of_an_unreadable_state(hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in("suspended", hv, tmp_path)
    (tmp_path / MEMORY).unlink()
    with pytest.raises(GahpError) as info:
        vm.resume()
    assert info.value.token == tokens.VM_INVALID_SUSPEND_FILE
    assert vm.state is VmState.SUSPENDED and hv.count("restore") == 0


def test_failed_resume_can_be_retried(hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in("running", hv, tmp_path, snapshot_disk=True)
    vm.checkpoint()
    before = snapshot(tmp_path)
    hv.faults.fail("restore", JobImageError("cannot load"), times=1)
    with pytest.raises(GahpError) as info:
        vm.resume()
    assert info.value.token == tokens.INTERNAL
    assert vm.state is VmState.SUSPENDED and status_word(vm) == "Suspended"
    assert snapshot(tmp_path) == before  # no orphan layer from the failed attempt
    vm.resume()
    assert status_word(vm) == "Running"


# ---------------------------------------------------------------------- stop
def test_stop_asks_the_guest_then_destroys_it(hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in("running", hv, tmp_path)
    vm.stop(5)
    assert hv.count("shutdown") == 1 and hv.count("destroy") == 0
    hv.shutdown_seconds = None  # this guest ignores the power button
    other = vm_in("soft", hv, tmp_path, name="bob_1.0")
    other.stop(0.05)
    assert hv.count("unpause", "bob_1.0") == 1  # a paused guest cannot see the power button
    assert hv.count("destroy", "bob_1.0") == 1 and hv.running() == []


def test_stop_of_a_suspended_vm_does_not_touch_the_hypervisor(hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in("suspended", hv, tmp_path)
    vm.stop(5)
    assert hv.count("shutdown") == 0 and vm.state is VmState.STOPPED
    assert (tmp_path / MEMORY).exists()  # the starter may still want it


def test_failed_shutdown_destroys(hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in("running", hv, tmp_path)
    hv.faults.fail("shutdown", HostError("no ACPI"))
    with pytest.raises(GahpError) as info:
        vm.stop(5)
    assert info.value.token == tokens.INTERNAL
    assert vm.state is VmState.STOPPED and hv.running() == [] and hv.count("destroy") == 1


# ----------------------------------------------------------- guest's own exit
@pytest.mark.parametrize("no_output", [False, True])
def test_self_shutdown_finishes_the_job(no_output: bool, hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in("running", hv, tmp_path, snapshot_disk=True, no_output_vm=no_output)
    vm.checkpoint()
    vm.resume()
    hv.guest_powers_off(VM_NAME)
    assert vm.status() == "STATUS=Stopped" and vm.self_shutdown
    vm.stop(5)
    assert [c for c in hv.calls if c.op in ("shutdown", "finish")] == [("finish", VM_NAME)]
    left = set(snapshot(tmp_path))
    assert not left & {ckpt.MANIFEST, ckpt.TIMESTAMP, MEMORY}  # the checkpoint is stale
    layers = {name for name in left if name.startswith("vmgahp-overlay-")}
    if no_output:
        assert left == {"disk.img"}  # the base under the layers is input, not output
    else:
        assert "disk.img" in left and len(layers) == 2


def test_destroy_ends_the_domain(hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in("soft", hv, tmp_path)
    vm.destroy()
    assert vm.state is VmState.STOPPED and hv.running() == []
    vm.destroy()  # gone already: not an error


def test_status_when_the_hypervisor_fails(hv: FakeHypervisor, tmp_path: Path) -> None:
    vm = vm_in("running", hv, tmp_path)
    hv.faults.fail("info", HostError("connection reset"), times=1)
    with pytest.raises(GahpError) as info:
        vm.status()
    assert info.value.token == tokens.INTERNAL
    assert status_word(vm) == "Running" and not vm.self_shutdown
