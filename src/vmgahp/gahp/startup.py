"""Start-up checks, in the C++ order (spec 1.7), before anything is printed.

Reading HTCondor's configuration (its library is ~20 MB resident) and the
hypervisor host check (the hypervisor library plus a connection) run in a
short-lived forked child:

* the long-lived gahp never carries HTCondor's configuration library, which
  keeps its idle footprint small;
* the checks get a hard deadline - a libvirtd that accepts the connection and
  never answers costs the probe at most ``deadline`` seconds, so the startd's
  5-second budget is kept;
* the parent imports the daemon while the child works.

The child answers on a pipe with the knob values (plain strings) or an error
text; the parent turns the knobs into :class:`~vmgahp.gahp.config.Settings`.
"""

from __future__ import annotations

import os
import select
import signal
import time

from vmgahp import log
from vmgahp.errors import VmgahpError


class StartupError(VmgahpError):
    """A start-up check failed: log it, print nothing on stdout, exit 1."""


def _settings(vm_type: str | None, knobs: dict[str, str]):  # -> Settings
    from vmgahp.drivers.registry import knobs_for
    from vmgahp.gahp.config import ConfigError, settings_from

    try:
        return settings_from(knobs.get, [k.name for k in knobs_for(vm_type)] if vm_type else ())
    except ConfigError as exc:
        raise StartupError(str(exc)) from exc


def _check_host(vm_type: str, knobs: dict[str, str]) -> list[str]:
    """Raise StartupError if the host cannot run ``vm_type``; return the
    networking types it really provides. What to check is the driver's
    business (a test hypervisor has no host to check)."""
    from vmgahp.drivers.base import HostCheckError
    from vmgahp.drivers.registry import load_hypervisor
    from vmgahp.settings import ConfigError

    try:
        hypervisor = load_hypervisor(vm_type, _settings(vm_type, knobs))
    except ConfigError as exc:
        raise StartupError(str(exc)) from exc
    try:
        hypervisor.check_host()
        return list(hypervisor.network_plan().types)
    except HostCheckError as exc:
        raise StartupError(f"{vm_type} cannot run on this host: {exc}") from exc
    finally:
        hypervisor.close()


def _send(write_fd: int, message: list) -> None:
    import json  # imported here: after the fork, not on the way to it

    view = memoryview(json.dumps(message).encode() + b"\n")
    while view:
        written = os.write(write_fd, view)
        view = view[written:]


def _child_main(vm_type: str | None, write_fd: int, terminal_log: bool) -> None:
    """Two messages: the knobs as soon as they are read, then the verdict."""
    try:
        from vmgahp.gahp.condor_param import read_knobs

        knobs = read_knobs(vm_type)
        _send(write_fd, ["knobs", knobs])
        log.setup(path=knobs.get("VM_GAHP_LOG", ""), terminal=terminal_log, options=log.options_from(knobs.get))
        if vm_type is not None:
            _send(write_fd, ["network", _check_host(vm_type, knobs)])
        verdict = ["ok", ""]
    except StartupError as exc:
        verdict = ["error", str(exc)]
    except BaseException as exc:  # report anything; the parent decides
        verdict = ["error", f"start-up check crashed: {exc!r}"]
    _send(write_fd, verdict)


class PendingPreflight:
    """The checks running in a child; the parent works on meanwhile."""

    def __init__(self, vm_type: str | None, deadline: float, terminal_log: bool = False) -> None:
        self.vm_type = vm_type
        self.deadline = deadline
        self.terminal_log = terminal_log
        self._started = time.monotonic()
        self.network_types: list[str] | None = None  # probed by the host check
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
        self._pid = pid
        self._reader = _LineReader(read_fd)

    def knobs(self) -> dict[str, str]:
        """The configuration knobs, once every check has passed."""
        knobs: dict[str, str] | None = None
        try:
            while True:
                end = self._started + self.deadline
                line = self._reader.line(end)
                import json

                kind, value = json.loads(line)
                if kind == "knobs":
                    knobs = value
                    # Known before the host check: the failure gets logged
                    # where the admin looks.
                    log.setup(path=value.get("VM_GAHP_LOG", ""), terminal=self.terminal_log,
                              options=log.options_from(value.get))
                    continue
                if kind == "network":
                    self.network_types = value
                    continue
                if kind != "ok":
                    raise StartupError(value)
                assert knobs is not None
                return knobs
        except TimeoutError as exc:
            os.kill(self._pid, signal.SIGKILL)
            what = f"the {self.vm_type} host check" if self.vm_type else "reading the configuration"
            raise StartupError(f"{what} did not finish within {self.deadline:g} s") from exc
        except EOFError as exc:
            raise StartupError("the start-up check died without an answer") from exc
        finally:
            self._reader.close()
            os.waitpid(self._pid, 0)

    def settings(self):  # -> Settings (config is imported here, not before)
        return _settings(self.vm_type, self.knobs())


class _LineReader:
    """Newline-delimited messages from a pipe, each awaited until a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""

    def line(self, end: float) -> bytes:
        while b"\n" not in self._buffer:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                raise TimeoutError
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def close(self) -> None:
        os.close(self.fd)
