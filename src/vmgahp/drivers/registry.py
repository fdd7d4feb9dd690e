"""The backends, found by folder and loaded only when used.

A backend is a package under ``vmgahp/drivers/`` whose ``__init__`` declares
``DRIVER = DriverInfo(...)`` (a package without one is not a backend): the VM types it runs, the module it needs
(``requires``, checked with ``find_spec`` - microseconds), where its
:class:`~vmgahp.drivers.base.Hypervisor` class lives, its configuration knobs
and its host module. Nothing here imports a hypervisor library, so
``SUPPORT_VMS`` and the probe stay fast; adding a backend is adding a folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections import namedtuple
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from vmgahp.drivers.base import Hypervisor
    from vmgahp.settings import Settings

# Namedtuples, not dataclasses: this module is imported on the way to the banner.
DriverInfo = namedtuple("DriverInfo", "vm_types requires hypervisor knobs host", defaults=((), ""))
Knob = namedtuple("Knob", "name kind", defaults=("string",))  # kind: string, integer, boolean

_HERE = os.path.dirname(__file__)
_found: tuple[DriverInfo, ...] | None = None


def drivers() -> tuple[DriverInfo, ...]:
    """Every backend package, in folder-name order (``SUPPORT_VMS`` order)."""
    global _found
    if _found is None:
        packages = sorted(name for name in os.listdir(_HERE)
                          if os.path.isfile(os.path.join(_HERE, name, "__init__.py")))
        declared = (getattr(importlib.import_module(f"vmgahp.drivers.{name}"), "DRIVER", None) for name in packages)
        _found = tuple(info for info in declared if info is not None)  # a folder without one is no backend yet
    return _found


def info_for(vm_type: str) -> DriverInfo:
    for info in drivers():
        if vm_type in info.vm_types:
            return info
    raise KeyError(f"no driver for VM type {vm_type!r}")


def known_types() -> tuple[str, ...]:
    return tuple(vm_type for info in drivers() for vm_type in info.vm_types)


def available_types() -> tuple[str, ...]:
    """The VM types whose backend library is installed on this host."""
    return tuple(vm_type for info in drivers() if importlib.util.find_spec(info.requires) is not None
                 for vm_type in info.vm_types)


def knobs_for(vm_type: str) -> tuple[Knob, ...]:
    try:
        return tuple(info_for(vm_type).knobs)
    except KeyError:
        return ()


def load_hypervisor(vm_type: str, settings: Settings) -> Hypervisor:
    """Import the backend for ``vm_type`` and construct it (no connection yet)."""
    module, _, cls = info_for(vm_type).hypervisor.partition(":")
    return getattr(importlib.import_module(module), cls)(settings, vm_type)


def local_defaults(vm_type: str, is_set: Callable[[str], bool]) -> list[tuple[str, str, str]]:
    """The backend's ``(knob, value, why)`` defaults for a machine with no
    HTCondor configuration (``vmgahp run`` on a workstation)."""
    host = info_for(vm_type).host
    return importlib.import_module(host).local_defaults(vm_type, is_set) if host else []
