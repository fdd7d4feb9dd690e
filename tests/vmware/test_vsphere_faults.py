"""Deadlines, waiting, session expiry and a dying server, against vcsim."""

from __future__ import annotations

import threading
import time

import pytest
from vsphere_rig import POOL, new_job

from vmgahp.drivers.vmware.errors import TimedOut, Unreachable
from vmgahp.drivers.vmware.tasks import wait_for
from vmgahp.drivers.vmware.transport import Deadline
from vmgahp.drivers.vmware.vsphere import POWERED_OFF, POWERED_ON

pytestmark = pytest.mark.vcsim


def _collectors_closed(session, within: float = 3.0) -> bool:
    """Cleanup after a cut-short wait runs in the background: give it a moment."""
    give_up = time.monotonic() + within
    while session.open_collectors and time.monotonic() < give_up:
        time.sleep(0.05)
    return not session.open_collectors


def _same_vm(client, job):
    """``job``'s VM as seen by another client (its own session)."""
    return client.find_vm(client.placement(pool=POOL), f"{job.folder}/job.vmx")


def test_delayed_power_on_times_out_within_the_deadline(vcsim_delay, connect, tmp_path):
    # govmomi 0.24 runs a task inside its *_Task call, so -method-delay delays the
    # call's answer (6 s): the deadline ends the call, not the server.
    client = connect(vcsim_delay)
    job = new_job(client, tmp_path)
    vm = job.register()
    started = time.monotonic()
    with pytest.raises(TimedOut, match="power on"):
        client.power_on(vm, timeout=2.0)
    elapsed = time.monotonic() - started
    assert 1.9 < elapsed < 2.6
    # The client is still usable at once, and the VM is still off...
    assert client.power_state(vm, timeout=2) == POWERED_OFF
    # ...but the abandoned call goes on in the server: TimedOut means "maybe later".
    assert client.wait_power_state(vm, POWERED_ON, timeout=8) == POWERED_ON
    assert 5.0 < time.monotonic() - started < 8.0
    assert _collectors_closed(client.session)


def test_wait_times_out_within_its_deadline(job):
    vm = job.register()
    session = job.client.session
    made = session.collectors_made
    started = time.monotonic()
    with pytest.raises(TimedOut, match="wait for"):
        job.client.wait_power_state(vm, POWERED_ON, timeout=2.5)
    elapsed = time.monotonic() - started
    assert 2.4 < elapsed < 3.0  # it waited the whole time, and no longer
    assert session.collectors_made == made + 1  # one private collector for the wait
    assert _collectors_closed(session)


def test_wait_wakes_on_the_change(job, vcsim, connect):
    vm = job.register()
    other = connect(vcsim)
    twin = _same_vm(other, job)
    timer = threading.Timer(1.0, other.power_on, [twin])
    started = time.monotonic()
    timer.start()
    try:
        assert job.client.wait_power_state(vm, [POWERED_ON, "suspended"], timeout=10) == POWERED_ON
    finally:
        timer.join()
    # WaitForUpdatesEx was asked to wait up to 10 s; it came back with the change
    # (vcsim gathers updates every 250 ms).
    assert 1.0 < time.monotonic() - started < 1.8
    assert _collectors_closed(job.client.session)


def test_expired_session_logs_in_again(vcsim_idle, connect, tmp_path):
    client = connect(vcsim_idle)
    job = new_job(client, tmp_path)
    vm = job.register()
    session = client.session
    logins, key = session.logins, session.session_key
    time.sleep(2.5)  # -idle 1s: vcsim drops the session within 2 s
    client.power_on(vm, timeout=5)  # refused without a session: logs in and repeats
    assert session.logins == logins + 1
    assert session.session_key != key
    assert client.power_state(vm) == POWERED_ON


def test_session_expiring_during_a_wait(vcsim_idle, connect, tmp_path):
    client = connect(vcsim_idle)
    job = new_job(client, tmp_path)
    vm = job.register()
    other = connect(vcsim_idle)
    twin = _same_vm(other, job)
    session = client.session
    logins = session.logins
    # 2 s slices: the session expires during the first, the second finds it gone; the
    # wait logs in again and starts over with a new collector, then sees the change.
    timer = threading.Timer(3.5, other.power_on, [twin])
    started = time.monotonic()
    timer.start()
    try:
        values = wait_for(session, vm.obj, ["runtime.powerState"], lambda v: v.get("runtime.powerState") == POWERED_ON,
                          Deadline(10), "wait across expiry", slice_seconds=2)  # fmt: skip
    finally:
        timer.join()
    assert values["runtime.powerState"] == POWERED_ON
    assert 3.5 < time.monotonic() - started < 5.0
    assert session.logins > logins
    assert other.session.logins == 2  # the other client's session had expired too
    assert _collectors_closed(session)


def test_simulator_killed_during_a_call(vcsim_factory, connect, tmp_path):
    sim = vcsim_factory()
    client = connect(sim)
    job = new_job(client, tmp_path)
    vm = job.register()
    killer = threading.Timer(1.0, sim.kill)
    started = time.monotonic()
    killer.start()
    try:
        with pytest.raises(Unreachable, match="wait for") as lost:
            client.wait_power_state(vm, POWERED_ON, timeout=10)
    finally:
        killer.join()
    assert 1.0 < time.monotonic() - started < 2.0  # at once, not at the deadline
    assert sim.proc.wait(5) == -9
    assert sim.password not in str(lost.value)
    source = job.local / "x"
    source.write_bytes(b"x")
    started = time.monotonic()
    with pytest.raises(Unreachable, match="refused"):
        client.power_state(vm, timeout=5)
    with pytest.raises(Unreachable, match="refused"):  # the HTTP side as well
        client.upload(job.where, source, f"{job.folder}/x", timeout=5)
    assert time.monotonic() - started < 1.0
