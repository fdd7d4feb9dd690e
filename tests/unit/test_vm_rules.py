"""Tier 1: CPUUTILIZATION arithmetic (spec 3.12, Q8, section 9) and hypervisor-call deadlines."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from vmgahp.vm import lifecycle as vm
from vmgahp.vm.deadline import DeadlineExceeded, call_with_deadline
from vmgahp.vm.lifecycle import CpuUtilization


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock(1_700_000_000.25)
    monkeypatch.setattr(vm.time, "time", fake)
    return fake


# --------------------------------------------------------------------------- CpuUtilization
class TestCpuUtilization:
    def test_first_sample_is_one(self, clock):
        """The first sample of the process always reports 1.0, whatever the CPU time."""
        assert CpuUtilization().sample(123_456_789_000, 2) == 1.0

    def test_same_second_is_one(self, clock):
        """A second sample within the same whole second reports 1.0."""
        cpu = CpuUtilization()
        cpu.sample(1_000_000_000, 1)
        clock.now += 0.7  # .25 -> .95: still the same second
        assert cpu.sample(1_900_000_000, 1) == 1.0

    def test_whole_seconds_not_fractions(self, clock):
        """Elapsed time counts in whole seconds: crossing a second boundary after 0.8 s counts as 1 s."""
        cpu = CpuUtilization()
        clock.now = 1000.9
        cpu.sample(0, 1)
        clock.now = 1001.7  # 0.8 s later, but int() says 1 s
        assert cpu.sample(500_000_000, 1) == pytest.approx(0.5)

    def test_delta_formula(self, clock):
        """After >= 1 s: CPU-time delta / (elapsed s x vCPUs x 1e9)."""
        cpu = CpuUtilization()
        clock.now = 2000.0
        cpu.sample(1_000_000_000, 2)
        clock.now = 2004.0
        assert cpu.sample(3_000_000_000, 2) == pytest.approx(2e9 / (4 * 2 * 1e9))  # 0.25

    def test_baseline_moves_each_sample(self, clock):
        """Each sample becomes the baseline for the next one."""
        cpu = CpuUtilization()
        clock.now = 3000.0
        cpu.sample(0, 1)
        clock.now = 3002.0
        assert cpu.sample(1_000_000_000, 1) == pytest.approx(0.5)
        clock.now = 3003.0
        assert cpu.sample(2_000_000_000, 1) == pytest.approx(1.0)
        clock.now = 3013.0
        assert cpu.sample(3_000_000_000, 1) == pytest.approx(0.1)

    def test_same_second_sample_updates_baseline(self, clock):
        """A same-second sample (reported as 1.0) still becomes the new CPU-time baseline."""
        cpu = CpuUtilization()
        clock.now = 4000.0
        cpu.sample(0, 1)
        clock.now = 4000.5
        assert cpu.sample(4_000_000_000, 1) == 1.0
        clock.now = 4002.0
        assert cpu.sample(5_000_000_000, 1) == pytest.approx(0.5)

    def test_shared_across_vms(self, clock):
        """One CpuUtilization is process-wide: a sample for one VM moves the baseline for another (Q8)."""
        cpu = CpuUtilization()
        clock.now = 5000.0
        cpu.sample(10_000_000_000, 1)  # VM A
        clock.now = 5002.0
        # VM B's counter is compared with A's: (12e9 - 10e9) / (2 x 1 x 1e9)
        assert cpu.sample(12_000_000_000, 1) == pytest.approx(1.0)

    def test_zero_vcpus_treated_as_one(self, clock):
        """A zero vCPU count does not divide by zero."""
        cpu = CpuUtilization()
        clock.now = 6000.0
        cpu.sample(0, 0)
        clock.now = 6001.0
        assert cpu.sample(250_000_000, 0) == pytest.approx(0.25)

    def test_status_text_format(self, clock):
        """The value prints with %f-style six decimals as the STATUS text requires."""
        cpu = CpuUtilization()
        assert f"CPUUTILIZATION={cpu.sample(0, 1):f}" == "CPUUTILIZATION=1.000000"


# --------------------------------------------------------------------------- call_with_deadline
class TestDeadline:
    def test_returns_value(self):
        """A call that finishes in time returns its value."""
        assert call_with_deadline(lambda: 42, 2.0) == 42

    def test_reraises_exception(self):
        """A call that raises in time re-raises the same exception in the caller."""
        boom = ValueError("no domain")

        def fail():
            raise boom

        with pytest.raises(ValueError) as info:
            call_with_deadline(fail, 2.0)
        assert info.value is boom

    def test_slow_call_raises_and_late_result_delivered(self):
        """A call past its deadline raises DeadlineExceeded, and on_late later receives its result."""
        release = threading.Event()
        late_seen = threading.Event()
        late: list = []

        def slow():
            release.wait(5)
            return "domain-up"

        def on_late(result, error):
            late.append((result, error))
            late_seen.set()

        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            call_with_deadline(slow, 0.05, on_late)
        assert time.monotonic() - started < 1.0
        assert late == []  # not yet finished
        release.set()
        assert late_seen.wait(2.0)
        assert late == [("domain-up", None)]

    def test_slow_failure_delivered_late(self):
        """An exception raised after the deadline reaches on_late as the error."""
        release = threading.Event()
        late_seen = threading.Event()
        late: list = []
        boom = RuntimeError("late failure")

        def slow():
            release.wait(5)
            raise boom

        def on_late(result, error):
            late.append((result, error))
            late_seen.set()

        with pytest.raises(DeadlineExceeded):
            call_with_deadline(slow, 0.05, on_late)
        release.set()
        assert late_seen.wait(2.0)
        assert late == [(None, boom)]

    def test_on_late_not_called_in_time(self):
        """on_late is never called when the call finishes before its deadline."""
        late: list = []
        finished = threading.Event()

        def quick():
            finished.set()
            return 1

        assert call_with_deadline(quick, 2.0, lambda r, e: late.append((r, e))) == 1
        time.sleep(0.05)
        assert late == []

    def test_slow_call_without_on_late(self):
        """A late call with no on_late handler finishes quietly after DeadlineExceeded."""
        release = threading.Event()
        with pytest.raises(DeadlineExceeded):
            call_with_deadline(lambda: release.wait(5), 0.02)
        release.set()

    def test_context_follows_call(self):
        """Context variables (log bindings) set by the caller are visible inside the call."""
        var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")
        token = var.set("req-7")
        try:
            assert call_with_deadline(var.get, 2.0) == "req-7"
        finally:
            var.reset(token)
