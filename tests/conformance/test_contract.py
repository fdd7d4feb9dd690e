"""The driver contract of vmgahp/drivers/base.py, on every driver (see conftest.py).

Only the contract is used here: what a driver writes into the working
directory, what a save and a restore leave, which kind of error (HostError:
the job is requeued, JobImageError: it is held) each failure is. Real boots
are few: each test starts at most one domain.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from vmgahp.drivers.base import Capability, DomainState, HostError, HypervisorError, JobImageError, SavedState
from vmgahp.errors import GahpError
from vmgahp.protocol import tokens

SUFFIX = ".partial"  # what the VM layer saves under (lifecycle.STAGED)


def listing(work: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in work.iterdir() if p.is_file()}


def unchanged(before: dict[str, str], now: dict[str, str]) -> bool:
    return {name: now.get(name) for name in before} == before


def commit(work: Path, state: SavedState, suffix: str = SUFFIX) -> None:
    for name in state.files:
        os.replace(work / (name + suffix), work / name)


def test_create_then_pause_and_unpause_idempotently(driver) -> None:
    hv, job = driver.hypervisor, driver.job()
    domain = hv.create(job)
    assert domain.name == job.name
    info = domain.info()
    assert info.state is DomainState.RUNNING
    assert info.max_memory_kib == 64 * 1024 and info.vcpus == 1
    assert hv.lookup(job.name).name == job.name
    domain.pause()
    domain.pause()
    assert domain.info().state is DomainState.PAUSED
    domain.unpause()
    domain.unpause()
    assert domain.info().state is DomainState.RUNNING
    assert domain.pid() >= 0


@pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
def test_save_then_restore(driver, paused: bool) -> None:
    hv, job, work = driver.hypervisor, driver.job(), driver.work
    domain = hv.create(job)
    if paused:
        domain.pause()
    before = listing(work)
    state = domain.save(work, SUFFIX)
    now = listing(work)
    # Only its own files, only under the suffix; what it keeps was there already.
    assert set(now) - set(before) == {name + SUFFIX for name in state.files}
    assert set(state.keeps) <= set(before)
    assert domain.info().state is DomainState.GONE and hv.lookup(job.name) is None
    assert hv.restore_mismatch(job, state) == ""
    elsewhere = job.disks[0].model_copy(update={"device": "vdb"})
    assert hv.restore_mismatch(job.model_copy(update={"disks": (elsewhere,)}), state) != ""
    commit(work, state)
    restored = hv.restore(job, state)
    assert restored.name == job.name
    assert restored.info().state is DomainState.RUNNING  # saved paused, back running


def test_restore_wherever_the_files_are(driver, tmp_path: Path) -> None:
    """Under the staging suffix (a commit that failed), and moved to another directory."""
    hv, job, work = driver.hypervisor, driver.job(), driver.work
    state = hv.create(job).save(work, SUFFIX)
    staged = SavedState(tuple(name + SUFFIX for name in state.files), state.keeps, state.record)
    assert hv.restore(job, staged).info().state is DomainState.RUNNING
    state = hv.lookup(job.name).save(work, "")
    moved_dir = tmp_path / "elsewhere"
    moved_dir.mkdir()
    for name in {*state.files, *state.keeps, "disk.img"}:
        os.rename(work / name, moved_dir / name)
    disk = job.disks[0].model_copy(update={"path": str(moved_dir / "disk.img")})
    moved = job.model_copy(update={"working_dir": str(moved_dir), "disks": (disk,)})
    assert hv.restore(moved, state).info().state is DomainState.RUNNING


def test_shutdown_ends_the_domain(driver) -> None:
    hv, job = driver.hypervisor, driver.job()
    domain = hv.create(job)
    domain.pause()  # a paused guest is unpaused to see the button
    domain.shutdown(driver.grace)
    assert domain.info().state is DomainState.GONE and hv.lookup(job.name) is None
    domain.shutdown(driver.grace)  # gone already: not an error


def test_destroy_and_destroy_by_name(driver) -> None:
    hv, job, work = driver.hypervisor, driver.job(), driver.work
    missing = f"conformance_missing_{uuid.uuid4().hex[:8]}"
    assert hv.lookup(missing) is None and hv.destroy_by_name(missing) is False
    domain = hv.create(job)
    assert hv.destroy_by_name(job.name) is True
    assert domain.info().state is DomainState.GONE and hv.lookup(job.name) is None
    domain.destroy()  # gone already: not an error
    assert hv.destroy_by_name(job.name) is False
    with pytest.raises(HypervisorError):
        domain.pause()
    before = listing(work)
    with pytest.raises(HypervisorError):
        domain.save(work, SUFFIX)
    assert listing(work) == before  # a failed save leaves nothing


def test_a_name_already_running_is_the_hosts_fault(driver) -> None:
    """Another job's live VM may have that name: left alone, the job requeued."""
    hv, job, work = driver.hypervisor, driver.job(), driver.work
    state = hv.create(job).save(work, "")
    hv.create(job)
    with pytest.raises(HostError):
        hv.create(job)
    with pytest.raises(HostError):
        hv.restore(job, state)
    assert hv.lookup(job.name).info().state is DomainState.RUNNING


def test_missing_disk_is_the_jobs_fault(driver) -> None:
    driver.require("missing_disk")
    hv, job = driver.hypervisor, driver.job()
    os.unlink(job.disks[0].path)
    with pytest.raises(JobImageError):
        hv.create(job)
    assert hv.lookup(job.name) is None


def test_unreachable_host_is_the_hosts_fault(driver) -> None:
    driver.require("unreachable")
    hv, job = driver.make_unreachable(), driver.job()
    try:
        with pytest.raises(HostError):
            hv.create(job)
        with pytest.raises(HostError):
            hv.lookup(job.name)
    finally:
        hv.close()


def test_corrupt_or_missing_state_is_the_jobs_fault(driver) -> None:
    hv, job, work = driver.hypervisor, driver.job(), driver.work
    state = hv.create(job).save(work, "")
    (work / state.files[0]).write_bytes(b"not a saved state\n" * 64)
    with pytest.raises(JobImageError):
        hv.restore(job, state)
    (work / state.files[0]).unlink()
    with pytest.raises(JobImageError):
        hv.restore(job, state)
    assert hv.lookup(job.name) is None


def test_read_job_of_a_minimal_ad_runs(driver) -> None:
    from vmgahp.job.jobad import JobAd
    from vmgahp.job.model import build_job

    hv, work = driver.hypervisor, driver.work
    user = f"conformance-{uuid.uuid4().hex[:8]}"
    job = build_job(JobAd(driver.ad_lines(User=f'"{user}"')), hv.settings, hv.network_plan(), None, hv)
    driver.names.append(job.name)
    assert (job.vm_type, job.name, job.memory_mib) == ("kvm", f"{user}_7.0", 64)
    assert [(Path(d.path), d.device, d.writable, d.transferred) for d in job.disks] == \
        [(work / "disk.img", "vda", True, True)]
    assert hv.create(hv.prepare(job, None)).info().state is DomainState.RUNNING
    lines = [line for line in driver.ad_lines() if not line.startswith("VMPARAM_")]
    with pytest.raises(GahpError) as info:  # the VM-type part is missing: its own token
        build_job(JobAd(lines), hv.settings, hv.network_plan(), None, hv)
    assert info.value.token in tokens.BY_WIRE and info.value.token != tokens.INTERNAL


def test_prepare_never_writes_a_file_already_there(driver) -> None:
    hv, job, work = driver.hypervisor, driver.job(snapshot_disk=True), driver.work
    before = listing(work)
    first = hv.prepare(job, None)
    after = listing(work)
    made = set(after) - set(before)
    assert unchanged(before, after) and made
    assert all(name.startswith("vmgahp-overlay-") for name in made)  # what a failed START removes
    assert Path(first.disks[0].path).name in made
    again = hv.prepare(job, None)  # a cold boot that finds an earlier run's layers
    assert unchanged(after, listing(work))
    state = hv.create(again).save(work, "")
    frozen = listing(work)
    resumed = hv.prepare(again, state)  # over the saved state's layers, which stay whole
    assert unchanged(frozen, listing(work)) and Path(resumed.disks[0].path).name not in frozen
    assert hv.restore(resumed, state).info().state is DomainState.RUNNING
    hv.destroy_by_name(job.name)
    hv.prepare(job, None, avoid=frozenset(frozen))
    assert unchanged(frozen, listing(work))
    hv.finish(resumed, output=False)  # no output wanted: what prepare made goes
    assert not [name for name in listing(work) if name.startswith("vmgahp-overlay-")]
    assert "disk.img" in listing(work)


def test_capabilities_and_network_plan(driver) -> None:
    hv, job = driver.hypervisor, driver.job()
    declared, for_job = hv.capabilities, hv.capabilities_for(job)
    assert for_job & ~declared == Capability.NONE  # never more than declared
    assert Capability.CHECKPOINT not in for_job or Capability.SAVE in for_job  # a checkpoint is a save
    plan = hv.network_plan()
    assert not plan.enabled  # VM_NETWORKING is off in these settings
    networked = driver.make(VM_NETWORKING="true", VM_NETWORKING_TYPE="nat, user")
    try:
        plan = networked.network_plan()
        assert set(plan.types) <= {"nat", "user"}
        assert not plan.enabled or plan.default in plan.types
    finally:
        networked.close()
