"""HTCondor configuration -> a typed, immutable settings object.

Knob values come from HTCondor's own configuration code (``htcondor2.param``):
the file named by ``CONDOR_CONFIG``, ``_CONDOR_<KNOB>`` environment overrides,
macro expansion and HTCondor's built-in defaults. Everything is read once at
start-up; the gahp never re-reads its configuration.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Callable

DEFAULT_KVM_URI = "qemu:///session"  # what the C++ gahp hard-codes
DEFAULT_XEN_URI = "xen:///system"
DEFAULT_REQ_TIMEOUT = 300
NETWORKING_TYPES = ("nat", "bridge", "user")


class ConfigError(Exception):
    """A knob has a value the gahp cannot run with (exit 1 at start-up)."""


@dataclass(frozen=True)
class Settings:
    vm_memory: int  # MiB; the largest VM this gahp may start
    vm_max_number: int = 0
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
    xml_script_args: tuple[str, ...] = ()
    xen_bootloader: str = ""
    xen_allow_hardware_vt_suspend: bool = False
    kvm_uri: str = DEFAULT_KVM_URI
    xen_uri: str = DEFAULT_XEN_URI
    kvm_domain_type: str = "kvm"
    snapshot_disk_default: bool = False

    def uri_for(self, vm_type: str) -> str:
        return self.xen_uri if vm_type == "xen" else self.kvm_uri


def parse_bool(value: str | None, default: bool = False) -> bool:
    """HTCondor booleans: true/false, yes/no, t/f, 1/0, case-insensitive."""
    if value is None:
        return default
    text = value.strip().strip('"').lower()
    if text in ("true", "t", "yes", "y", "1"):
        return True
    if text in ("false", "f", "no", "n", "0"):
        return False
    try:
        return float(text) != 0
    except ValueError:
        return default


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


def _int(get: Callable[[str], str | None], name: str, default: int) -> int:
    raw = get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(float(raw.strip()))
    except ValueError as exc:
        raise ConfigError(f"{name} = {raw!r} is not a number") from exc


def settings_from(get: Callable[[str], str | None]) -> Settings:
    """Build Settings from any knob lookup (``htcondor2.param.get`` in production)."""
    memory_text = get("VM_MEMORY")
    try:
        vm_memory = int(memory_text.strip()) if memory_text else 0
    except ValueError:
        vm_memory = 0
    if vm_memory <= 0:
        raise ConfigError(f"VM_MEMORY must be an integer > 0 (got {memory_text!r})")

    types = parse_type_list(get("VM_NETWORKING_TYPE"))
    networking = parse_bool(get("VM_NETWORKING")) and bool(types)
    req_timeout = _int(get, "VM_GAHP_REQ_TIMEOUT", DEFAULT_REQ_TIMEOUT)
    # Our own deadline on hypervisor calls must expire before the starter's
    # request timeout does, so the starter sees a token and not a timeout.
    call_default = max(5, req_timeout - 30)
    domain_type = (get("VM_KVM_DOMAIN_TYPE") or "kvm").strip().lower()
    if domain_type not in ("kvm", "qemu"):
        raise ConfigError(f"VM_KVM_DOMAIN_TYPE must be kvm or qemu (got {domain_type!r})")
    debug = (get("VM_GAHP_DEBUG") or "").upper()
    args = get("LIBVIRT_XML_SCRIPT_ARGS") or ""
    try:
        script_args = tuple(shlex.split(args))
    except ValueError as exc:
        raise ConfigError(f"LIBVIRT_XML_SCRIPT_ARGS does not parse: {exc}") from exc

    return Settings(
        vm_memory=vm_memory,
        vm_max_number=_int(get, "VM_MAX_NUMBER", 0),
        networking=networking,
        networking_types=types if networking else (),
        networking_default_type=_strip_quotes(get("VM_NETWORKING_DEFAULT_TYPE") or ""),
        bridge_interface=_strip_quotes(get("VM_NETWORKING_BRIDGE_INTERFACE") or ""),
        hardware_vt=parse_bool(get("VM_HARDWARE_VT")),
        soft_suspend=parse_bool(get("VM_SOFT_SUSPEND")),
        log_path=(get("VM_GAHP_LOG") or "").strip(),
        log_debug="D_FULLDEBUG" in debug or "D_ALL" in debug,
        req_timeout=req_timeout,
        call_timeout=float(_int(get, "VM_GAHP_CALL_TIMEOUT", call_default)),
        shutdown_timeout=float(_int(get, "VM_GAHP_SHUTDOWN_TIMEOUT", 30)),
        workers=max(1, _int(get, "VM_GAHP_WORKERS", 4)),
        xml_script=(get("LIBVIRT_XML_SCRIPT") or "").strip(),
        xml_script_args=script_args,
        xen_bootloader=_strip_quotes(get("XEN_BOOTLOADER") or ""),
        xen_allow_hardware_vt_suspend=parse_bool(get("XEN_ALLOW_HARDWARE_VT_SUSPEND")),
        kvm_uri=(get("VM_KVM_LIBVIRT_URI") or DEFAULT_KVM_URI).strip(),
        xen_uri=(get("VM_XEN_LIBVIRT_URI") or DEFAULT_XEN_URI).strip(),
        kvm_domain_type=domain_type,
        snapshot_disk_default=parse_bool(get("VM_SNAPSHOT_DISK")),
    )


def load_settings() -> Settings:
    """Read the HTCondor configuration of this process (CONDOR_CONFIG + env)."""
    from .condor_param import read_knobs

    return settings_from(read_knobs().get)
