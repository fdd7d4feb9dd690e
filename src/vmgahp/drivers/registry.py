"""Lazy driver registry: VM type -> backend class, imported only when used.

Nothing here imports a hypervisor library. ``available_types`` asks the import
system whether a backend's library is installed (``find_spec``), which costs
microseconds, so ``SUPPORT_VMS`` and the probe stay fast.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections import namedtuple
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from vmgahp.gahp.config import Settings
    from vmgahp.drivers.base import Hypervisor

# ``requires``: the top-level module the backend needs. (A namedtuple, not a
# dataclass: this module is imported on the way to the banner.)
DriverEntry = namedtuple("DriverEntry", "vm_type module cls requires host")


# Order is the SUPPORT_VMS order (the C++ answers "S xen kvm").
DRIVERS: tuple[DriverEntry, ...] = (
    DriverEntry("xen", "vmgahp.drivers.libvirt.driver", "LibvirtHypervisor", "libvirt", "vmgahp.drivers.libvirt.host"),
    DriverEntry("kvm", "vmgahp.drivers.libvirt.driver", "LibvirtHypervisor", "libvirt", "vmgahp.drivers.libvirt.host"),
)


def known_types() -> tuple[str, ...]:
    return tuple(entry.vm_type for entry in DRIVERS)


def available_types() -> tuple[str, ...]:
    """The VM types whose backend library is installed on this host."""
    return tuple(e.vm_type for e in DRIVERS if importlib.util.find_spec(e.requires) is not None)


def load_hypervisor(vm_type: str, settings: Settings) -> Hypervisor:
    """Import the backend for ``vm_type`` and construct it (no connection yet)."""
    for entry in DRIVERS:
        if entry.vm_type == vm_type:
            module = importlib.import_module(entry.module)
            return getattr(module, entry.cls)(settings, vm_type)
    raise KeyError(f"no driver for VM type {vm_type!r}")


def local_defaults(vm_type: str, is_set: Callable[[str], bool]) -> list[tuple[str, str, str]]:
    """The backend's ``(knob, value, why)`` defaults for a machine with no
    HTCondor configuration (``vmgahp run`` on a workstation)."""
    for entry in DRIVERS:
        if entry.vm_type == vm_type:
            return importlib.import_module(entry.host).local_defaults(vm_type, is_set)
    return []
