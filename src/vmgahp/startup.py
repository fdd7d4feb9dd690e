"""Start-up checks, in the C++ order (spec 1.7), before anything is printed.

The configuration (HTCondor's library, ~20 MB resident) and the hypervisor
host check (the hypervisor library plus a connection) run in a short-lived
forked child:

* the long-lived gahp never carries HTCondor's configuration library, which
  keeps its idle footprint small;
* the host check gets a hard deadline - a libvirtd that accepts the connection
  and never answers costs the probe at most ``deadline`` seconds, and the
  startd's 5-second budget is kept.

The child sends back a pickled :class:`Preflight` (or an error text) on a pipe.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
from dataclasses import dataclass

from . import log
from .config import ConfigError, Settings, load_settings
from .networking import NetworkPlan


class StartupError(Exception):
    """A start-up check failed: log it, print nothing on stdout, exit 1."""


@dataclass(frozen=True)
class Preflight:
    settings: Settings
    network: NetworkPlan | None = None  # what the host offers (when checked)


def _child_main(vm_type: str | None, write_fd: int, terminal_log: bool) -> None:
    try:
        settings = load_settings()
        log.setup(path=settings.log_path, debug=settings.log_debug, terminal=terminal_log)
        network = None
        if vm_type is not None:
            from .drivers.base import HostCheckError
            from .drivers.registry import load_hypervisor

            hypervisor = load_hypervisor(vm_type, settings)
            try:
                hypervisor.check_host()
                network = hypervisor.network_plan()
            except HostCheckError as exc:
                raise StartupError(f"{vm_type} cannot run on this host: {exc}") from exc
            finally:
                hypervisor.close()
        payload = pickle.dumps(("ok", Preflight(settings, network)))
    except (ConfigError, StartupError) as exc:
        payload = pickle.dumps(("error", str(exc)))
    except BaseException as exc:  # report anything; the parent decides
        payload = pickle.dumps(("error", f"start-up check crashed: {exc!r}"))
    view = memoryview(payload)
    while view:
        written = os.write(write_fd, view)
        view = view[written:]


def preflight(vm_type: str | None, deadline: float, terminal_log: bool = False) -> Preflight:
    """Load the configuration and, if ``vm_type`` is given, check the host."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 0
        try:
            os.close(read_fd)
            _child_main(vm_type, write_fd, terminal_log)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        data = _read_all(read_fd, deadline)
    except TimeoutError as exc:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        what = f"the {vm_type} host check" if vm_type else "reading the configuration"
        raise StartupError(f"{what} did not finish within {deadline:g} s") from exc
    finally:
        os.close(read_fd)
    os.waitpid(pid, 0)
    if not data:
        raise StartupError("the start-up check died without an answer")
    status, value = pickle.loads(data)
    if status != "ok":
        raise StartupError(value)
    return value


def _read_all(fd: int, deadline: float) -> bytes:
    chunks = []
    end = time.monotonic() + deadline
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
