"""HTCondor configuration -> a typed, immutable settings object.

Knob values come from HTCondor's own configuration code (``htcondor2.param``):
the file named by ``CONDOR_CONFIG``, ``_CONDOR_<KNOB>`` environment overrides,
macro expansion and HTCondor's built-in defaults. Everything is read once at
start-up; the gahp never re-reads its configuration.
"""

from __future__ import annotations

from typing import Callable, Iterable

from vmgahp.log_knobs import options_from
from vmgahp.settings import DEFAULT_REQ_TIMEOUT, ConfigError, KnobReader, Settings

__all__ = ["ConfigError", "Settings", "load_settings", "parse_type_list", "settings_from"]

NETWORKING_TYPES = ("nat", "bridge", "user")


def _strip_quotes(value: str) -> str:
    return value.replace('"', "").strip()


def parse_type_list(value: str | None) -> tuple[str, ...]:
    """``VM_NETWORKING_TYPE``: split on commas and blanks, lower-cased, unique."""
    if not value:
        return ()
    seen: list[str] = []
    for word in _strip_quotes(value).replace(",", " ").split():
        word = word.lower()
        if word not in seen:
            seen.append(word)
    return tuple(seen)


def settings_from(get: Callable[[str], str | None], driver_knobs: Iterable[str] = ()) -> Settings:
    """Build Settings from any knob lookup (``htcondor2.param.get`` in production);
    ``driver_knobs`` names the VM type's own knobs, kept for its driver.

    Only what the gahp cannot run without fails here: ``VM_MEMORY`` (the C++
    exits 1 without it). Every other bad value is a warning and its default;
    the driver's knobs are the driver's to judge (at its host check).
    """
    read = KnobReader(get)
    vm_memory = read.integer("VM_MEMORY", 0)
    if vm_memory <= 0:
        raise ConfigError(f"VM_MEMORY must be an integer expression > 0 (got {get('VM_MEMORY')!r})")

    types = parse_type_list(get("VM_NETWORKING_TYPE"))
    networking = read.boolean("VM_NETWORKING") and bool(types)
    req_timeout = read.integer("VM_GAHP_REQ_TIMEOUT", DEFAULT_REQ_TIMEOUT)
    # Our own deadline on hypervisor calls must expire before the starter's
    # request timeout does, so the starter sees a token and not a timeout.
    call_default = max(5, req_timeout - 30)
    debug = read.string("VM_GAHP_DEBUG").upper()
    call_timeout = read.integer("VM_GAHP_CALL_TIMEOUT", call_default)
    shutdown_timeout = read.integer("VM_GAHP_SHUTDOWN_TIMEOUT", 30)
    workers = read.integer("VM_GAHP_WORKERS", 4)
    knobs = {name: value for name in driver_knobs if (value := get(name)) is not None}
    log_options, log_warnings = options_from(get)

    return Settings(
        vm_memory=vm_memory,
        networking=networking,
        networking_types=types if networking else (),
        networking_default_type=_strip_quotes(get("VM_NETWORKING_DEFAULT_TYPE") or ""),
        bridge_interface=_strip_quotes(get("VM_NETWORKING_BRIDGE_INTERFACE") or ""),
        hardware_vt=read.boolean("VM_HARDWARE_VT"),
        soft_suspend=read.boolean("VM_SOFT_SUSPEND"),
        log_path=read.string("VM_GAHP_LOG"),
        log_debug="D_FULLDEBUG" in debug or "D_ALL" in debug,
        log_options=log_options,
        req_timeout=req_timeout,
        call_timeout=float(max(1, call_timeout)),
        shutdown_timeout=float(max(0, shutdown_timeout)),
        workers=max(1, workers),
        driver_knobs=knobs,
        warnings=tuple(read.warnings + log_warnings),
    )


def load_settings(vm_type: str = "kvm") -> Settings:
    """Read the HTCondor configuration of this process (CONDOR_CONFIG + env)."""
    from vmgahp.drivers.registry import knobs_for
    from vmgahp.gahp.condor_param import read_knobs

    names = [knob.name for knob in knobs_for(vm_type)]
    return settings_from(read_knobs(vm_type).get, names)
