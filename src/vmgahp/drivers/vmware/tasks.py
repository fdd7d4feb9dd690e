"""Waiting for properties and tasks: a private property collector, never sleep-polling.

``wait_for`` makes its own PropertyCollector (``CreatePropertyCollector``; the shared
one's filters would mix with other waiters'), puts one filter on the object's
properties and calls ``WaitForUpdatesEx`` with ``maxWaitSeconds`` = the time left
(sliced, so that no HTTP request idles for minutes), until ``done(values)`` holds or
the deadline passes (TimedOut). The collector is destroyed afterwards. If the session
expires meanwhile, the collector died with it: ``with_session_objects`` logs in again
and the wait starts over with a new one, from the current values.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from vmgahp import log
from vmgahp.drivers.vmware.errors import NotFound, Unreachable, VSphereError
from vmgahp.drivers.vmware.session import Session, SessionExpired, fault_error
from vmgahp.drivers.vmware.transport import Deadline

WAIT_SLICE = 30  # seconds: longest single WaitForUpdatesEx (below transport.IO_TIMEOUT)
TASK_PATHS = ("info.state", "info.error", "info.result")


def wait_for(session: Session, obj: Any, paths: Sequence[str], done: Callable[[dict[str, Any]], bool],
             deadline: Deadline, what: str, slice_seconds: int = WAIT_SLICE) -> dict[str, Any]:  # fmt: skip
    """Watch ``paths`` of ``obj`` until ``done({path: value})``; returns those values."""
    return session.with_session_objects(
        what, deadline, lambda: _wait_once(session, obj, paths, done, deadline, what, slice_seconds)
    )


def _wait_once(session: Session, obj: Any, paths: Sequence[str], done: Callable[[dict[str, Any]], bool],
               deadline: Deadline, what: str, slice_seconds: int) -> dict[str, Any]:  # fmt: skip
    from pyVmomi import vmodl

    pcls = vmodl.query.PropertyCollector
    collector = session.invoke(what, deadline, session.content.propertyCollector.CreatePropertyCollector,
                               per_session=True)  # fmt: skip
    session.open_collectors.add(collector._moId)
    session.collectors_made += 1
    cleanup = "now"
    try:
        spec = pcls.FilterSpec(objectSet=[pcls.ObjectSpec(obj=obj)],
                               propSet=[pcls.PropertySpec(type=type(obj), pathSet=list(paths))])  # fmt: skip
        session.invoke(what, deadline, collector.CreateFilter, spec, False, per_session=True)
        values: dict[str, Any] = {}
        version = ""  # the first answer is the current state, at once
        while True:
            left = deadline.check(what)
            options = pcls.WaitOptions(maxWaitSeconds=max(1, min(slice_seconds, int(left))))
            cleanup = "later"  # if this call is cut short, the server still holds the wait
            update = session.invoke(what, deadline, collector.WaitForUpdatesEx, version, options,
                                    per_session=True)  # fmt: skip
            cleanup = "now"
            if update is None:  # maxWaitSeconds passed without a change
                continue
            version = update.version
            _apply(update, values, what)
            if done(values):
                return values
    except SessionExpired:
        cleanup = "gone"  # the collector went with the session
        raise
    except Unreachable:
        cleanup = "gone"
        raise
    finally:
        _destroy(session, collector, cleanup)


def _apply(update: Any, values: dict[str, Any], what: str) -> None:
    for filter_update in update.filterSet or []:
        for change_set in filter_update.objectSet or []:
            if change_set.kind == "leave":
                raise NotFound(f"{what}: {change_set.obj._moId} went away")
            for change in change_set.changeSet or []:
                if change.op in ("remove", "indirectRemove"):
                    values.pop(change.name, None)
                else:
                    values[change.name] = change.val


def _destroy(session: Session, collector: Any, when: str) -> None:
    if when == "gone":
        session.open_collectors.discard(collector._moId)
        return

    def destroy() -> None:
        try:
            session.invoke("destroy property collector", Deadline(10.0), collector.DestroyPropertyCollector,
                           per_session=True)  # fmt: skip
        except VSphereError as exc:  # SessionExpired included: then it is gone anyway
            log.get().debug("vsphere_collector_leak", collector=collector._moId, detail=str(exc))
        session.open_collectors.discard(collector._moId)

    if when == "later":
        # The server answers the abandoned wait within a second; destroying now would
        # wait for it (vcsim locks the collector), past the caller's deadline.
        threading.Thread(target=destroy, name="vsphere-collector-cleanup", daemon=True).start()
    else:
        destroy()


def wait_task(session: Session, task: Any, deadline: Deadline, what: str) -> Any:
    """The task's result once it succeeded; its fault as a VSphereError if it failed."""
    values = wait_for(session, task, TASK_PATHS, lambda v: v.get("info.state") in ("success", "error"),
                      deadline, what)  # fmt: skip
    if values["info.state"] == "error":
        fault = values.get("info.error")
        raise fault_error(fault, what) if fault is not None else VSphereError(f"{what}: the task failed")
    return values.get("info.result")


def run_task(session: Session, what: str, deadline: Deadline, method: Callable[..., Any], *args: Any,
             **kwargs: Any) -> Any:  # fmt: skip
    """Start a ``*_Task`` method and wait for its end."""
    task = session.invoke(what, deadline, method, *args, **kwargs)
    return wait_task(session, task, deadline, what)
