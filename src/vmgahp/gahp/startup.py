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


def _config_child(vm_type: str | None, to_host: int | None, write_fd: int) -> None:
    """The configuration: the knobs, then the verdict."""
    if to_host is not None:
        os.close(to_host)  # the host child's EOF must mean "no knobs are coming"
    try:
        from vmgahp.gahp.condor_param import read_knobs

        _send(write_fd, ["knobs", read_knobs(vm_type)])
        verdict = ["ok", ""]
    except StartupError as exc:
        verdict = ["error", str(exc)]
    except BaseException as exc:  # report anything; the parent decides
        verdict = ["error", f"reading the configuration crashed: {exc!r}"]
    _send(write_fd, verdict)


def _host_child(vm_type: str, read_fd: int, to_host: int, terminal_log: bool, write_fd: int) -> None:
    """The host check: the backend is imported while the other child reads the
    configuration (two cores: both at once), then the knobs arrive on
    ``read_fd``; the networking types, then the verdict."""
    import importlib
    import json

    os.close(to_host)  # our copy of the parent's end: EOF must be the parent's doing
    try:
        from vmgahp.drivers.registry import info_for

        try:
            importlib.import_module(info_for(vm_type).hypervisor.partition(":")[0])
        except Exception:  # noqa: BLE001 - the check below reports it with the knobs known
            pass
        knobs = json.loads(_LineReader(read_fd).line(time.monotonic() + 3600))
        log.setup(path=knobs.get("VM_GAHP_LOG", ""), terminal=terminal_log, options=log.options_from(knobs.get))
        _send(write_fd, ["network", _check_host(vm_type, knobs)])
        verdict = ["ok", ""]
    except EOFError:
        return  # the configuration failed: the parent has its error already
    except StartupError as exc:
        verdict = ["error", str(exc)]
    except BaseException as exc:  # report anything; the parent decides
        verdict = ["error", f"start-up check crashed: {exc!r}"]
    _send(write_fd, verdict)


def _fork(child, *args) -> tuple[int, int]:
    """``child(write_fd, *args)`` in a forked process; its pid and our read end."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 0
        try:
            os.close(read_fd)
            child(*args, write_fd)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


class PendingPreflight:
    """The checks running in two children; the parent works on meanwhile.

    One child reads HTCondor's configuration, the other imports the backend
    at the same time and checks the host once it has the knobs (the parent
    passes them on): the banner waits for the slower of the two imports, not
    for both one after the other."""

    def __init__(self, vm_type: str | None, deadline: float, terminal_log: bool = False) -> None:
        self.vm_type = vm_type
        self.deadline = deadline
        self.terminal_log = terminal_log
        self._started = time.monotonic()
        self.network_types: list[str] | None = None  # probed by the host check
        self._pids: list[int] = []
        self._host: _LineReader | None = None
        self._to_host: int | None = None
        if vm_type is not None:
            knobs_read, self._to_host = os.pipe()
            pid, host_fd = _fork(_host_child, vm_type, knobs_read, self._to_host, terminal_log)
            os.close(knobs_read)
            self._pids.append(pid)
            self._host = _LineReader(host_fd)
        pid, config_fd = _fork(_config_child, vm_type, self._to_host)
        self._pids.append(pid)
        self._config = _LineReader(config_fd)

    def knobs(self) -> dict[str, str]:
        """The configuration knobs, once every check has passed."""
        import json

        knobs: dict[str, str] | None = None
        end = self._started + self.deadline
        try:
            for reader in filter(None, (self._config, self._host)):
                while True:
                    kind, value = json.loads(reader.line(end))
                    if kind == "knobs":
                        knobs = value
                        # Known before the host check: its failure gets logged
                        # where the admin looks.
                        log.setup(path=value.get("VM_GAHP_LOG", ""), terminal=self.terminal_log,
                                  options=log.options_from(value.get))
                        self._pass_on(value)
                    elif kind == "network":
                        self.network_types = value
                    elif kind == "ok":
                        break
                    else:
                        raise StartupError(value)
            assert knobs is not None
            return knobs
        except TimeoutError as exc:
            for pid in self._pids:
                os.kill(pid, signal.SIGKILL)
            what = (f"the {self.vm_type} host check" if self.vm_type and knobs is not None
                    else "reading the configuration")
            raise StartupError(f"{what} did not finish within {self.deadline:g} s") from exc
        except EOFError as exc:
            raise StartupError("the start-up check died without an answer") from exc
        finally:
            self._close()

    def _pass_on(self, knobs: dict[str, str]) -> None:
        if self._to_host is None:
            return
        import json

        try:
            os.write(self._to_host, json.dumps(knobs).encode() + b"\n")  # < PIPE_BUF*16: one write
        except OSError:
            pass  # the host child is gone: its reader says so
        os.close(self._to_host)
        self._to_host = None

    def _close(self) -> None:
        if self._to_host is not None:
            os.close(self._to_host)  # the host child sees EOF and ends
            self._to_host = None
        for reader in filter(None, (self._config, self._host)):
            reader.close()
        for pid in self._pids:
            os.waitpid(pid, 0)
        self._pids = []

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
