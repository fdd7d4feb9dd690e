"""UEFI firmware for KVM guests: ``+VMPARAM_Firmware = "uefi"`` in the submit file.

A UEFI guest boots from the host's firmware code (read-only, shared by every
guest) and keeps its own variables - boot entries, Secure Boot keys - in an
NVRAM file. That file is the guest's state as much as its disk is, so it is
the job's: ``vmgahp-nvram.fd`` in the working directory, copied from the
host's variable template at the first start, listed among the files of every
checkpoint (the starter ships it with the memory state) and pointed at
again when a checkpoint is restored in another working directory.

The firmware files are a host knob, ``VM_UEFI_LOADER`` and
``VM_UEFI_NVRAM_TEMPLATE``; the defaults are Debian's ``ovmf`` (x86_64) and
``qemu-efi-aarch64`` (aarch64) packages. aarch64 guests also need the
``virt`` machine (there is no BIOS PC on ARM) and have no APIC.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from xml.dom import minidom

from vmgahp import log

ATTR = "VMPARAM_Firmware"
NVRAM_NAME = "vmgahp-nvram.fd"
KINDS = ("bios", "uefi")

# arch -> (code, variable template, machine type; "" keeps libvirt's default)
DEFAULTS = {
    "x86_64": ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd", ""),
    "aarch64": ("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd", "virt"),
}


@dataclass(frozen=True)
class Uefi:
    """The host's UEFI firmware for one guest architecture."""

    loader: str
    template: str
    arch: str = "x86_64"
    machine: str = ""

    @classmethod
    def for_host(cls, loader: str = "", template: str = "", arch: str = "") -> Uefi:
        arch = arch or platform.machine()
        code, variables, machine = DEFAULTS.get(arch, DEFAULTS["x86_64"])
        return cls(loader or code, template or variables, arch, machine)

    def missing(self) -> list[str]:
        return [path for path in (self.loader, self.template) if not os.access(path, os.R_OK)]

    def why_missing(self) -> str:
        return (f"UEFI firmware not readable on this host: {', '.join(self.missing())} "
                "(install ovmf, or set VM_UEFI_LOADER and VM_UEFI_NVRAM_TEMPLATE)")


def owner_of(uid: int | None, gid: int | None) -> tuple[int, int] | None:
    return None if uid is None else (uid, gid if gid is not None else uid)


def parse_kind(value: str | None) -> str | None:
    """``bios`` (the default), ``uefi`` (``efi`` too); None for anything else."""
    kind = (value or "bios").strip().lower()
    kind = "uefi" if kind == "efi" else kind
    return kind if kind in KINDS else None


def nvram_path(working_dir: str) -> str:
    return os.path.join(working_dir, NVRAM_NAME)


def prepare_nvram(working_dir: str, uefi: Uefi, owner: tuple[int, int] | None) -> str:
    """The job's NVRAM file: kept when it is there (a restored checkpoint's), else
    a copy of the template owned by the job's user, like its other files."""
    path = nvram_path(working_dir)
    if os.path.exists(path):
        return path
    partial = path + ".new"
    shutil.copyfile(uefi.template, partial)
    os.chmod(partial, 0o600)
    if owner is not None and os.geteuid() == 0:
        os.chown(partial, *owner)
    os.replace(partial, path)
    log.get().info("nvram_created", path=path, template=uefi.template)
    return path


def nvram_in(description: str, working_dir: str) -> str | None:
    """The NVRAM file (by name) a domain description uses, if it is in the working dir."""
    for el in minidom.parseString(description.encode("utf-8")).getElementsByTagName("nvram"):
        path = "".join(node.data for node in el.childNodes if node.nodeType == node.TEXT_NODE).strip()
        if path and os.path.dirname(path) == os.path.normpath(working_dir):
            return os.path.basename(path)
    return None


def retarget_nvram(xml: str, working_dir: str) -> str | None:
    """``xml`` with its NVRAM file moved into ``working_dir``; None if nothing moves."""
    doc = minidom.parseString(xml.encode("utf-8"))
    changed = False
    for el in doc.getElementsByTagName("nvram"):
        old = "".join(node.data for node in el.childNodes if node.nodeType == node.TEXT_NODE).strip()
        new = os.path.join(working_dir, os.path.basename(old))
        if old and old != new:
            while el.firstChild is not None:
                el.removeChild(el.firstChild)
            el.appendChild(doc.createTextNode(new))
            changed = True
    root = doc.documentElement
    return root.toxml() if changed and root is not None else None
