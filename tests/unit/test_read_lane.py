"""The read lane on its own: order, a hung read, a read that waited too long, the hung-call cap.

Reads are plain callables here, with deadlines set by the test, so each case
is reached on purpose instead of by timing luck. Through the runtime (STATUS
and GETPID on the fake driver) see test_runtime_scheduling.py.
"""

from __future__ import annotations

import threading
import time

import pytest

from helpers import wait_until
from vmgahp.vm import deadline
from vmgahp.vm.read_lane import Read, ReadLane

WAIT = 10.0


@pytest.fixture
def lane():
    made = ReadLane(tick=0.01, name="test-reader")
    yield made
    made.close()


@pytest.fixture
def hung_base():
    """The global hung-call count once earlier tests' released calls ended."""
    assert wait_until(lambda: deadline.hung_calls() == 0)
    return deadline.hung_calls()


class Outcomes:
    """What became of each read: ran (and on which thread) or expired (and why)."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, str]] = []
        self.expired: list[tuple[str, str]] = []

    def read(self, label: str, seconds: float, body=lambda: None) -> Read:
        def run() -> None:
            body()
            self.ran.append((label, threading.current_thread().name))

        return Read(run, lambda why: self.expired.append((label, why)), time.monotonic() + seconds)

    def labels_ran(self) -> list[str]:
        return [label for label, _ in self.ran]

    def labels_expired(self) -> list[str]:
        return [label for label, _ in self.expired]


def test_reads_run_in_arrival_order_on_one_long_lived_thread(lane: ReadLane) -> None:
    seen = Outcomes()
    for i in range(200):
        lane.submit(seen.read(str(i), WAIT))
    assert wait_until(lambda: len(seen.ran) == 200)
    assert seen.labels_ran() == [str(i) for i in range(200)]
    assert {thread for _, thread in seen.ran} == {"test-reader"}
    assert seen.expired == []


def test_a_hung_read_is_expired_at_its_deadline_and_a_new_reader_takes_the_queue(
        lane: ReadLane, hung_base: int) -> None:
    gate = threading.Event()
    seen = Outcomes()
    began = time.monotonic()
    lane.submit(seen.read("hung", 0.3, gate.wait))
    lane.submit(seen.read("next", WAIT))
    assert wait_until(lambda: seen.labels_ran() == ["next"])
    assert seen.labels_expired() == ["hung"] and "deadline" in seen.expired[0][1]
    assert time.monotonic() - began >= 0.3  # not before its deadline
    assert deadline.hung_calls() == hung_base + 1  # its thread is still in the call
    gate.set()
    assert wait_until(lambda: deadline.hung_calls() == hung_base)
    assert wait_until(lambda: seen.labels_ran() == ["next", "hung"])  # it ended; its result is the caller's to drop
    lane.submit(seen.read("after", WAIT))
    assert wait_until(lambda: seen.labels_ran()[-1:] == ["after"])
    assert seen.labels_expired() == ["hung"]


def test_a_read_that_waited_out_its_deadline_is_expired_not_run(lane: ReadLane, hung_base: int) -> None:
    gate = threading.Event()
    seen = Outcomes()
    lane.submit(seen.read("slow", 0.3, gate.wait))
    lane.submit(seen.read("stale", 0.1))  # its deadline passes while it waits behind "slow"
    assert wait_until(lambda: len(seen.expired) == 2)
    assert seen.labels_expired() == ["slow", "stale"]
    assert "waited" in seen.expired[1][1]
    assert seen.ran == []  # the stale read never reached its call
    gate.set()
    assert wait_until(lambda: deadline.hung_calls() == hung_base)


def test_past_the_hung_cap_reads_are_refused_until_a_hung_one_ends(
        lane: ReadLane, hung_base: int, monkeypatch) -> None:
    monkeypatch.setattr(deadline, "MAX_HUNG_CALLS", hung_base + 1)
    gate = threading.Event()
    seen = Outcomes()
    lane.submit(seen.read("hung", 0.2, gate.wait))
    lane.submit(seen.read("queued", WAIT))  # no reader may take it once "hung" is given up
    assert wait_until(lambda: len(seen.expired) == 2)
    assert seen.labels_expired() == ["hung", "queued"]
    lane.submit(seen.read("refused", WAIT))
    assert seen.labels_expired()[-1] == "refused"  # at once, no thread started for it
    assert "still hung" in seen.expired[-1][1]
    gate.set()
    assert wait_until(lambda: deadline.hung_calls() == hung_base)
    lane.submit(seen.read("again", WAIT))  # the hung reader, back from its call, reads on
    assert wait_until(lambda: seen.labels_ran() == ["hung", "again"])
    assert seen.ran[1][1] == "test-reader"
    assert seen.labels_expired() == ["hung", "queued", "refused"]
