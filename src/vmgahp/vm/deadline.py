"""Run a blocking call with a deadline, and clean up if it finishes too late.

A hung hypervisor (libvirtd stuck, a vCenter that never answers) must not
hang the gahp: the caller gives up after the deadline and answers with a
token. The call keeps running in its own daemon thread; if it later finishes,
``on_late`` receives its outcome so that, for example, a VM that came up
after its START was given up is destroyed instead of orphaned.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any, Callable, Generic, TypeVar, cast

from vmgahp.errors import VmgahpError

T = TypeVar("T")
LateHandler = Callable[[Any, BaseException | None], None]


MAX_HUNG_CALLS = 32  # abandoned calls still running; beyond this none is started


class DeadlineExceeded(VmgahpError):
    """The call did not finish within its deadline."""


_hung_lock = threading.Lock()
_hung = 0  # calls given up on whose thread has not finished yet


def hung_calls() -> int:
    with _hung_lock:
        return _hung


def may_leave_another() -> bool:
    """Whether one more call may be given up on and left running."""
    return hung_calls() < MAX_HUNG_CALLS


def note_abandoned() -> None:
    """A call was given up on; its thread runs on."""
    global _hung
    with _hung_lock:
        _hung += 1


def note_late_end() -> None:
    """A call given up on has ended."""
    global _hung
    with _hung_lock:
        _hung -= 1


class DeadlineCall(Generic[T]):
    """One call in its own thread. A hung hypervisor leaves threads behind;
    at most ``MAX_HUNG_CALLS`` may be left at a time - past that a new call
    fails at once (DeadlineExceeded) instead of adding a thread."""

    def __init__(self, fn: Callable[[], T], name: str = "vmgahp-call", *, essential: bool = False) -> None:
        # ``essential``: the clean-up that destroys VMs at exit is tried whatever hangs.
        if not essential and not may_leave_another():
            raise DeadlineExceeded(f"{MAX_HUNG_CALLS} earlier calls are still hung; not starting another")
        # Log bindings (request and VM ids) follow the call into its thread.
        self._context = contextvars.copy_context()
        self._fn = fn
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._abandoned = False
        self._on_late: LateHandler | None = None
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            self._result = self._context.run(self._fn)
        except BaseException as exc:  # handed to the waiting caller
            self._error = exc
        with self._lock:
            self._done.set()
            abandoned = self._abandoned
            late = self._on_late if abandoned else None
        if abandoned:
            note_late_end()
        if late is not None:
            late(self._result, self._error)

    def wait(self, timeout: float, on_late: LateHandler | None = None) -> T:
        """The call's result; raises its exception, or DeadlineExceeded."""
        self._done.wait(timeout)
        with self._lock:
            if not self._done.is_set():
                self._abandoned = True
                self._on_late = on_late
                note_abandoned()
                raise DeadlineExceeded(f"no answer within {timeout:g} s")
        if self._error is not None:
            raise self._error
        return cast(T, self._result)  # set by the call that ended without an error


def call_with_deadline(fn: Callable[[], T], timeout: float, on_late: LateHandler | None = None) -> T:
    return DeadlineCall(fn).wait(timeout, on_late)
