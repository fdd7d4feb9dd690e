"""A deadline on every test, so that one hung hypervisor call fails its test
(with every thread's stack on stderr) instead of eating CI's whole budget.

At the deadline SIGALRM fails the test from wherever the main thread is. A
test blocked inside a C call (libvirt's restore waiting on QEMU) sees it only
when the call returns; if that has not happened a grace later, the run ends
with exit 70 rather than hang.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading

import pytest

DEADLINE_SECONDS = float(os.environ.get("VMGAHP_TEST_DEADLINE", "420"))
GRACE_SECONDS = 60.0


def _expired(nodeid: str):
    def handler(signum, frame):
        pytest.fail(f"{nodeid} still running after its {DEADLINE_SECONDS:.0f} s deadline", pytrace=True)
    return handler


def _last_resort(nodeid: str, finished: threading.Event) -> None:
    if finished.wait(DEADLINE_SECONDS):
        return
    faulthandler.dump_traceback(all_threads=True)
    if not finished.wait(GRACE_SECONDS):
        sys.stderr.write(f"\ndeadline: {nodeid} did not come back from a blocking call; ending the run\n")
        sys.stderr.flush()
        os._exit(70)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    finished = threading.Event()
    previous = signal.signal(signal.SIGALRM, _expired(item.nodeid))
    signal.setitimer(signal.ITIMER_REAL, DEADLINE_SECONDS)
    threading.Thread(target=_last_resort, args=(item.nodeid, finished), daemon=True,
                     name="test-deadline").start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        finished.set()
