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
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")
LateHandler = Callable[[Any, BaseException | None], None]


class DeadlineExceeded(Exception):
    """The call did not finish within its deadline."""


class DeadlineCall(Generic[T]):
    def __init__(self, fn: Callable[[], T], name: str = "vmgahp-call") -> None:
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
            late = self._on_late if self._abandoned else None
        if late is not None:
            late(self._result, self._error)

    def wait(self, timeout: float, on_late: LateHandler | None = None) -> T:
        """The call's result; raises its exception, or DeadlineExceeded."""
        self._done.wait(timeout)
        with self._lock:
            if not self._done.is_set():
                self._abandoned = True
                self._on_late = on_late
                raise DeadlineExceeded(f"no answer within {timeout:g} s")
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


def call_with_deadline(fn: Callable[[], T], timeout: float, on_late: LateHandler | None = None) -> T:
    return DeadlineCall(fn).wait(timeout, on_late)
