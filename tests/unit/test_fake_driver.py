"""The in-memory driver's own test hooks: faults by name and count, gates, delays, a shared host.
(Its contract behaviour is checked with every other driver in tests/conformance.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fake_vm import make_job
from vmgahp.drivers.base import DomainState, HostError, HypervisorError
from vmgahp.drivers.fake import Call, FakeHost, FakeHypervisor


def test_a_failure_for_a_number_of_calls_and_one_name(tmp_path: Path) -> None:
    hv = FakeHypervisor()
    hv.faults.fail("create", HostError("busy"), name="a_1.0", times=2)
    for _ in range(2):
        with pytest.raises(HostError):
            hv.create(make_job(tmp_path, name="a_1.0"))
    hv.create(make_job(tmp_path, name="b_1.0"))  # another name: not affected
    hv.create(make_job(tmp_path, name="a_1.0"))  # the two failures are spent
    assert hv.count("create") == 4 and hv.count("create", "a_1.0") == 3
    assert hv.running() == ["a_1.0", "b_1.0"]


def test_a_failure_may_leave_the_domain_changed(tmp_path: Path) -> None:
    hv = FakeHypervisor()
    domain = hv.create(make_job(tmp_path))
    hv.faults.fail("save", HostError("stuck"), times=1, leaves=DomainState.PAUSED)
    with pytest.raises(HostError):
        domain.save(tmp_path, ".partial")
    assert domain.info().state is DomainState.PAUSED and not list(tmp_path.glob("*.partial"))
    hv.faults.fail("pause", HostError("crashed"), leaves=DomainState.GONE)
    with pytest.raises(HostError):
        domain.pause()
    assert domain.info().state is DomainState.GONE
    with pytest.raises(HypervisorError):
        domain.unpause()  # gone: an error without a kind, as libvirt's no-domain


def test_gate_holds_calls_until_released_or_cleared(tmp_path: Path) -> None:
    hv = FakeHypervisor()
    domain = hv.create(make_job(tmp_path))
    gate = hv.faults.block("info")
    answers: list[DomainState] = []
    threads = [threading.Thread(target=lambda: answers.append(domain.info().state)) for _ in range(2)]
    for thread in threads:
        thread.start()
    assert gate.wait_entered(2) and answers == []
    gate.release()
    for thread in threads:
        thread.join(5)
    assert answers == [DomainState.RUNNING] * 2
    hv.faults.block("pause")
    pausing = threading.Thread(target=domain.pause)
    pausing.start()
    hv.faults.clear()  # lets every blocked call go
    pausing.join(5)
    assert not pausing.is_alive() and domain.info().state is DomainState.PAUSED


def test_delay_and_a_guest_that_ignores_the_power_button(tmp_path: Path) -> None:
    hv = FakeHypervisor()
    hv.faults.delay("create", 0.2)
    began = time.monotonic()
    domain = hv.create(make_job(tmp_path))
    assert time.monotonic() - began >= 0.2
    hv.shutdown_seconds = None
    began = time.monotonic()
    domain.shutdown(0.2)
    assert time.monotonic() - began >= 0.2 and hv.running() == []
    assert [c.op for c in hv.calls][-2:] == ["shutdown", "destroy"]  # destroyed after the grace
    assert hv.calls[0] == Call("create", make_job(tmp_path).name)


def test_two_hypervisors_on_one_host(tmp_path: Path) -> None:
    """Two gahps (or a gahp and kill mode) on one machine see the same domains."""
    host = FakeHost()
    first, second = FakeHypervisor(host=host), FakeHypervisor(host=host)
    job = make_job(tmp_path)
    first.create(job)
    with pytest.raises(HostError):
        second.create(job)
    assert second.destroy_by_name(job.name) is True and first.running() == []
