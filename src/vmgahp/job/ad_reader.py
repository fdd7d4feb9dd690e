"""The job ad evaluated in a child process, started before it is needed.

The child (:mod:`vmgahp.job.ad_values`) is an exec'd interpreter, not a fork:
the gahp has worker threads by then, and a forked child could inherit a lock
one of them held. ``prepare`` starts it while the starter is still sending the
ad, so its interpreter and classad2 have loaded by START; ``evaluate`` hands it
the lines and reads the entries. Should the child fail, the ad is evaluated
in this process (correct, only bigger), and the reason logged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from vmgahp import log
from vmgahp.job.ad_values import Entry

CHILD_TIMEOUT = 30.0  # seconds; an ad of the protocol's bounded size takes milliseconds

_lock = threading.Lock()
_waiting: subprocess.Popen | None = None


def _spawn() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vmgahp.job.ad_values"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))


def prepare() -> None:
    """Start the child that the next ``evaluate`` will use."""
    global _waiting
    with _lock:
        if _waiting is None:
            try:
                _waiting = _spawn()
            except OSError as exc:
                log.get().warning("ad_child_failed", detail=f"cannot start it: {exc}")


def evaluate(lines: list[str] | tuple[str, ...]) -> tuple[list[Entry], list[str]]:
    global _waiting
    with _lock:
        child, _waiting = _waiting, None
    try:
        if child is None:
            child = _spawn()
        out = _exchange(child, json.dumps(list(lines)).encode())
        answer = json.loads(out)
        return [tuple(entry) for entry in answer["entries"]], list(answer["dropped"])
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the ad is still read
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        log.get().warning("ad_child_failed", detail=f"{exc!r}; evaluating the ad in this process")
        from vmgahp.job.ad_values import evaluate as in_process

        return in_process(lines)


def _exchange(child: subprocess.Popen, data: bytes) -> bytes:
    """The child's answer, read to the EOF it makes as soon as it has written
    it; its exit (an interpreter with classad2 takes tens of ms to tear down)
    is reaped in the background."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(data)
    child.stdin.close()
    answer: list[bytes] = []
    reader = threading.Thread(target=lambda: answer.append(child.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(CHILD_TIMEOUT)
    if reader.is_alive() or not answer or not answer[0]:
        child.kill()
        _, err = child.communicate()
        raise RuntimeError(f"no answer (exit {child.returncode}): {err.decode(errors='replace').strip()[-300:]}")
    threading.Thread(target=_reap, args=(child,), daemon=True, name="ad-child-reap").start()
    return answer[0]


def _reap(child: subprocess.Popen) -> None:
    assert child.stderr is not None and child.stdout is not None
    err = child.stderr.read()
    child.wait()
    child.stdout.close()
    child.stderr.close()
    if child.returncode != 0:
        log.get().warning("ad_child_failed", detail=f"exit {child.returncode} after answering: "
                                                    f"{err.decode(errors='replace').strip()[-300:]}")
