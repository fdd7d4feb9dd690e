"""What the gahp was configured with: the shared knobs, and the VM type's own.

:class:`Settings` is built once at start-up by :mod:`vmgahp.gahp.config` from
HTCondor's configuration and handed down to every layer. The knobs every VM
type shares are fields; the VM type's own knobs (declared by its driver, see
:mod:`vmgahp.drivers.registry`) are kept as their configured text in
``driver_knobs`` and read by the driver with a :class:`KnobReader`, which
gives them HTCondor's semantics (``param_integer``, ``param_boolean``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from vmgahp.condor_syntax import condor_boolean, condor_integer
from vmgahp.errors import VmgahpError
from vmgahp.log_knobs import LogOptions

DEFAULT_REQ_TIMEOUT = 300


class ConfigError(VmgahpError):
    """A knob has a value the gahp cannot run with (exit 1 at start-up)."""


@dataclass(frozen=True)
class Settings:
    vm_memory: int  # MiB; the largest VM this gahp may start
    networking: bool = False
    networking_types: tuple[str, ...] = ()
    networking_default_type: str = ""
    bridge_interface: str = ""
    hardware_vt: bool = False
    soft_suspend: bool = False
    log_path: str = ""
    log_debug: bool = False
    # MAX_VM_GAHP_LOG, MAX_NUM_VM_GAHP_LOG, VM_GAHP_LOG_FORMAT, ... (vmgahp.log_knobs)
    log_options: LogOptions = LogOptions()
    req_timeout: int = DEFAULT_REQ_TIMEOUT
    call_timeout: float = DEFAULT_REQ_TIMEOUT - 30.0
    shutdown_timeout: float = 30.0
    workers: int = 4
    # The VM type's own knobs, as configured (integers and booleans already
    # evaluated to literals by the start-up child).
    driver_knobs: Mapping[str, str] = field(default_factory=dict, compare=False)
    # Knobs whose value HTCondor would reject, each with what was used instead.
    warnings: tuple[str, ...] = field(default=(), compare=False)


class KnobReader:
    """param_integer / param_boolean over a knob lookup: an invalid value
    falls back to the default with a warning, as HTCondor logs and does."""

    def __init__(self, get: Callable[[str], str | None]) -> None:
        self.get = get
        self.warnings: list[str] = []

    def integer(self, name: str, default: int) -> int:
        raw = self.get(name)
        if raw is None or not raw.strip():
            return default
        value = condor_integer(raw)
        if value is None:
            self.warnings.append(f"{name} = {raw!r} is not an integer expression; using {default}")
            return default
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        raw = self.get(name)
        if raw is None or not raw.strip():
            return default
        value = condor_boolean(raw)
        if value is None:
            self.warnings.append(f"{name} = {raw!r} is not a boolean (true/false); using {default}")
            return default
        return value

    def string(self, name: str, default: str = "") -> str:
        return (self.get(name) or default).strip()

    def unquoted(self, name: str) -> str:
        """HTCondor's ``delete_quotation_marks``: every double quote goes."""
        return (self.get(name) or "").replace('"', "").strip()
