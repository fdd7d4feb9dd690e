"""What this host really offers a KVM guest, checked, not assumed.

libvirt's capabilities claim ``kvm`` whenever ``/dev/kvm`` exists, and the
KVM ioctls answer even where guests cannot run: under a nested "PVM"
hypervisor (``kvm_pvm``) ``KVM_CREATE_VM`` succeeds and a Linux guest then
hangs at its first protected-mode instruction. So hardware virtualization
counts as working only when all of these hold:

* ``/dev/kvm`` opens read-write and answers ``KVM_GET_API_VERSION`` with 12;
* on x86, the CPU advertises ``vmx`` (Intel) or ``svm`` (AMD) and the
  matching ``kvm_intel`` / ``kvm_amd`` module is loaded (PVM has neither);
* on other architectures (aarch64), the API answer is enough.

:func:`local_defaults` uses it for ``vmgahp run`` on a machine without
HTCondor configuration.
"""

from __future__ import annotations

import fcntl
import os
import platform
from pathlib import Path
from typing import Callable

KVM_DEVICE = "/dev/kvm"
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
_X86 = ("x86_64", "i686", "i386", "amd64")


def hardware_virtualization(
    root: Path = Path("/"), machine: str | None = None, ask_device: bool = True
) -> tuple[bool, str]:
    """(works, why). Tests point ``root`` at a fake /dev, /proc and /sys and
    skip the ioctl (``ask_device``), which a plain file cannot answer."""
    device = root / KVM_DEVICE.lstrip("/")
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"{KVM_DEVICE} cannot be opened read-write ({exc.strerror})"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION) if ask_device else KVM_API_VERSION
    except OSError as exc:
        return False, f"{KVM_DEVICE} does not answer KVM_GET_API_VERSION ({exc.strerror})"
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return False, f"{KVM_DEVICE} speaks KVM API {version}, not {KVM_API_VERSION}"
    machine = machine or platform.machine()
    if machine not in _X86:
        return True, f"{KVM_DEVICE} answers (KVM API {version}, {machine})"
    flags = _cpu_flags(root / "proc/cpuinfo")
    modules = {name for name in ("kvm_intel", "kvm_amd", "kvm_pvm") if (root / "sys/module" / name).is_dir()}
    if not flags & {"vmx", "svm"}:
        served = " (it is served by kvm_pvm, a nested hypervisor)" if "kvm_pvm" in modules else ""
        return False, f"the CPU advertises no vmx/svm: {KVM_DEVICE} is not hardware virtualization{served}"
    if not modules & {"kvm_intel", "kvm_amd"}:
        return False, "neither kvm_intel nor kvm_amd is loaded"
    return True, f"{'Intel VT-x' if 'vmx' in flags else 'AMD-V'} through {KVM_DEVICE}"


def _cpu_flags(cpuinfo: Path) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def local_defaults(vm_type: str, is_set: Callable[[str], bool]) -> list[tuple[str, str, str]]:
    """``(knob, value, why)`` for each libvirt knob a machine with no HTCondor
    configuration lacks: the libvirt URI this user can use and the domain
    type that really runs here."""
    chosen = []
    if vm_type == "kvm":
        if not is_set("VM_KVM_LIBVIRT_URI"):
            if os.geteuid() == 0:
                chosen.append(("VM_KVM_LIBVIRT_URI", "qemu:///system", "running as root: the system libvirtd"))
            else:
                chosen.append(("VM_KVM_LIBVIRT_URI", "qemu:///session", "not root: your own session libvirtd"))
        if not is_set("VM_KVM_DOMAIN_TYPE"):
            works, why = hardware_virtualization()
            chosen.append(("VM_KVM_DOMAIN_TYPE", "kvm" if works else "qemu",
                           why if works else f"software emulation: {why}"))
    return chosen
