"""Helpers shared by the tests (h11's tests/helpers.py is the model).

Knobs are given as HTCondor would hold them - strings, by knob name - and go
through the same code as a real configuration: ``settings_from`` for the
shared ones, the driver's own reader for the libvirt ones.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from vmgahp.drivers.registry import knobs_for
from vmgahp.gahp.config import settings_from
from vmgahp.settings import Settings

TEST_URI = "test:///default"
TESTS = Path(__file__).resolve().parent  # tests/: the shared data (transcripts, fixtures, scripts)
TOP = TESTS.parent  # the checkout


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, every: float = 0.01) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` s pass (False)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(every)
    return True


def settings(vm_type: str = "kvm", **knobs: Any) -> Settings:
    """Settings from knob strings; VM_MEMORY defaults to 1024. Non-string values
    are written as HTCondor would print them."""
    knobs.setdefault("VM_MEMORY", "1024")
    values = {name: _text(value) for name, value in knobs.items() if value is not None}
    return settings_from(values.get, [knob.name for knob in knobs_for(vm_type)])


def on_test_hypervisor(vm_type: str = "kvm", **knobs: Any) -> Settings:
    """Settings for libvirt's in-process test hypervisor."""
    knobs.setdefault("VM_KVM_LIBVIRT_URI", TEST_URI)
    knobs.setdefault("VM_XEN_LIBVIRT_URI", TEST_URI)
    knobs.setdefault("VM_KVM_DOMAIN_TYPE", "qemu")
    return settings(vm_type, **knobs)


def libvirt_settings(vm_type: str = "kvm", **knobs: Any):  # -> LibvirtSettings
    from vmgahp.drivers.libvirt.settings import LibvirtSettings

    return LibvirtSettings.from_knobs(settings(vm_type, **knobs).driver_knobs, vm_type)[0]


def hypervisor(vm_type: str = "kvm", **knobs: Any):  # -> LibvirtHypervisor
    from vmgahp.drivers.libvirt.driver import LibvirtHypervisor

    return LibvirtHypervisor(on_test_hypervisor(vm_type, **knobs), vm_type)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
