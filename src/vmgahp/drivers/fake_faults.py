"""Fault injection for :mod:`vmgahp.drivers.fake`: what a test makes a call do.

A fault is keyed by operation name (``create``, ``save``, ``info``...) and
optionally one domain name: fail with a given error (every call, or the next
``times``), wait on a :class:`Gate` until the test releases it (a hung
hypervisor), or take some time. :meth:`Faults.clear` lets everything go.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from vmgahp.drivers.base import DomainState


class Call(NamedTuple):
    """One call into the fake (structlog.testing's CapturedCall is the model)."""

    op: str
    name: str  # the domain name, "" when the call names none


class Gate:
    """Calls that hit a blocked operation wait here until :meth:`release`."""

    def __init__(self) -> None:
        self._released = threading.Event()
        self._cond = threading.Condition()
        self.entered = 0  # calls that reached the gate so far

    def pass_through(self) -> None:
        with self._cond:
            self.entered += 1
            self._cond.notify_all()
        self._released.wait()

    def wait_entered(self, count: int = 1, timeout: float = 10.0) -> bool:
        """True once ``count`` calls have reached the gate (False after ``timeout``)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.entered >= count, timeout)

    def release(self) -> None:
        self._released.set()


@dataclass(eq=False)  # faults are told apart by identity
class Fault:
    op: str
    name: str | None
    error: BaseException | None = None
    times: int | None = None  # failures left; None: every call
    leaves: DomainState | None = None  # what the failed call leaves the domain in
    gate: Gate | None = None
    seconds: float = 0.0


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._cleared = threading.Event()

    def fail(self, op: str, error: BaseException, *, name: str | None = None, times: int | None = None,
             leaves: DomainState | None = None) -> None:
        """``op`` raises ``error``; ``leaves`` is the state it leaves the domain in
        (GONE: it ended, PAUSED: stuck paused), as a save that failed midway."""
        with self._lock:
            self._faults.append(Fault(op, name, error=error, times=times, leaves=leaves))

    def block(self, op: str, *, name: str | None = None) -> Gate:
        gate = Gate()
        with self._lock:
            self._faults.append(Fault(op, name, gate=gate))
        return gate

    def delay(self, op: str, seconds: float, *, name: str | None = None) -> None:
        with self._lock:
            self._faults.append(Fault(op, name, seconds=seconds))

    def sleep(self, seconds: float) -> None:
        """Time passing in the fake (a delay, a shutdown grace); clear() ends it."""
        with self._lock:
            cleared = self._cleared
        cleared.wait(seconds)

    def clear(self) -> None:
        """No more faults; every blocked or delayed call goes on."""
        with self._lock:
            faults, self._faults = self._faults, []
            cleared, self._cleared = self._cleared, threading.Event()
        cleared.set()
        for fault in faults:
            if fault.gate is not None:
                fault.gate.release()

    def apply(self, op: str, name: str) -> Fault | None:
        """Wait as delays and gates say, then return the failure due, if any."""
        with self._lock:
            due = [f for f in self._faults if f.op == op and f.name in (None, name)]
        for fault in due:
            if fault.seconds:
                self.sleep(fault.seconds)
            if fault.gate is not None:
                fault.gate.pass_through()
        with self._lock:
            for fault in due:
                if fault.error is not None and fault in self._faults:
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None
