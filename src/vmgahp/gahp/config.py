"""HTCondor configuration -> a typed, immutable settings object.

Knob values come from HTCondor's own configuration code (``htcondor2.param``):
the file named by ``CONDOR_CONFIG``, ``_CONDOR_<KNOB>`` environment overrides,
macro expansion and HTCondor's built-in defaults. Everything is read once at
start-up; the gahp never re-reads its configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from vmgahp.gahp.condor_syntax import condor_boolean, condor_integer

DEFAULT_KVM_URI = "qemu:///session"  # what the C++ gahp hard-codes
DEFAULT_XEN_URI = "xen:///system"
DEFAULT_REQ_TIMEOUT = 300
NETWORKING_TYPES = ("nat", "bridge", "user")


class ConfigError(Exception):
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
    req_timeout: int = DEFAULT_REQ_TIMEOUT
    call_timeout: float = DEFAULT_REQ_TIMEOUT - 30.0
    shutdown_timeout: float = 30.0
    workers: int = 4
    xml_script: str = ""
    xml_script_args: str = ""  # HTCondor argument syntax, parsed at START (xml_script.script_argv)
    xen_bootloader: str = ""
    xen_allow_hardware_vt_suspend: bool = False
    kvm_uri: str = DEFAULT_KVM_URI
    xen_uri: str = DEFAULT_XEN_URI
    kvm_domain_type: str = "kvm"
    snapshot_disk_default: bool = False
    # Knobs whose value HTCondor would reject, each with what was used instead.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def uri_for(self, vm_type: str) -> str:
        return self.xen_uri if vm_type == "xen" else self.kvm_uri


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


class _Reader:
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


def settings_from(get: Callable[[str], str | None]) -> Settings:
    """Build Settings from any knob lookup (``htcondor2.param.get`` in production).

    Only what the gahp cannot run without fails here: ``VM_MEMORY`` (the C++
    exits 1 without it) and ``VM_KVM_DOMAIN_TYPE`` (the host check depends on
    it). Every other bad value is a warning and its default; a knob that only
    START reads (``LIBVIRT_XML_SCRIPT_ARGS``) is not parsed here at all.
    """
    read = _Reader(get)
    vm_memory = read.integer("VM_MEMORY", 0)
    if vm_memory <= 0:
        raise ConfigError(f"VM_MEMORY must be an integer expression > 0 (got {get('VM_MEMORY')!r})")

    types = parse_type_list(get("VM_NETWORKING_TYPE"))
    networking = read.boolean("VM_NETWORKING") and bool(types)
    req_timeout = read.integer("VM_GAHP_REQ_TIMEOUT", DEFAULT_REQ_TIMEOUT)
    # Our own deadline on hypervisor calls must expire before the starter's
    # request timeout does, so the starter sees a token and not a timeout.
    call_default = max(5, req_timeout - 30)
    domain_type = read.string("VM_KVM_DOMAIN_TYPE", "kvm").lower()
    if domain_type not in ("kvm", "qemu"):
        raise ConfigError(f"VM_KVM_DOMAIN_TYPE must be kvm or qemu (got {domain_type!r})")
    debug = read.string("VM_GAHP_DEBUG").upper()
    call_timeout = read.integer("VM_GAHP_CALL_TIMEOUT", call_default)
    shutdown_timeout = read.integer("VM_GAHP_SHUTDOWN_TIMEOUT", 30)
    workers = read.integer("VM_GAHP_WORKERS", 4)

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
        req_timeout=req_timeout,
        call_timeout=float(max(1, call_timeout)),
        shutdown_timeout=float(max(0, shutdown_timeout)),
        workers=max(1, workers),
        xml_script=read.string("LIBVIRT_XML_SCRIPT"),
        xml_script_args=get("LIBVIRT_XML_SCRIPT_ARGS") or "",
        xen_bootloader=_strip_quotes(get("XEN_BOOTLOADER") or ""),
        xen_allow_hardware_vt_suspend=read.boolean("XEN_ALLOW_HARDWARE_VT_SUSPEND"),
        kvm_uri=read.string("VM_KVM_LIBVIRT_URI", DEFAULT_KVM_URI) or DEFAULT_KVM_URI,
        xen_uri=read.string("VM_XEN_LIBVIRT_URI", DEFAULT_XEN_URI) or DEFAULT_XEN_URI,
        kvm_domain_type=domain_type,
        snapshot_disk_default=read.boolean("VM_SNAPSHOT_DISK"),
        warnings=tuple(read.warnings),
    )


def load_settings() -> Settings:
    """Read the HTCondor configuration of this process (CONDOR_CONFIG + env)."""
    from vmgahp.gahp.condor_param import read_knobs

    return settings_from(read_knobs().get)
