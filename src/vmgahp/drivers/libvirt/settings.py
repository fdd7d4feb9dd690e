"""The libvirt backend's own knobs (declared in ``drivers/libvirt/__init__``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from vmgahp.drivers.libvirt.bridge_script import BridgeScript, read_bridge_script
from vmgahp.settings import ConfigError, KnobReader

DEFAULT_KVM_URI = "qemu:///session"  # what the C++ gahp hard-codes
DEFAULT_XEN_URI = "xen:///system"
KVM_DOMAIN_TYPES = ("kvm", "qemu")


@dataclass(frozen=True)
class LibvirtSettings:
    uri: str
    domain_type: str = "kvm"  # KVM only: "qemu" runs guests under software emulation
    xml_script: str = ""
    xml_script_args: str = ""  # HTCondor argument syntax, parsed at START (xml_script.script_argv)
    xen_bootloader: str = ""
    xen_allow_hardware_vt_suspend: bool = False
    snapshot_disk_default: bool = False
    compress_checkpoints: bool = True  # off for a pool whose other nodes run the C++ gahp
    uefi_loader: str = ""  # VM_UEFI_LOADER; "" is the host's default (firmware.DEFAULTS)
    uefi_nvram_template: str = ""  # VM_UEFI_NVRAM_TEMPLATE
    bridge_script: BridgeScript = BridgeScript()  # XEN_BRIDGE_SCRIPT / VM_BRIDGE_SCRIPT (Xen only)

    @classmethod
    def from_knobs(cls, knobs: Mapping[str, str], vm_type: str) -> tuple[LibvirtSettings, list[str]]:
        """The settings and the warnings about knobs HTCondor would reject.
        An unknown VM_KVM_DOMAIN_TYPE is an error: the host check depends on it."""
        read = KnobReader(knobs.get)
        domain_type = read.string("VM_KVM_DOMAIN_TYPE", "kvm").lower()
        if domain_type not in KVM_DOMAIN_TYPES:
            raise ConfigError(f"VM_KVM_DOMAIN_TYPE must be kvm or qemu (got {domain_type!r})")
        if vm_type == "xen":
            uri = read.string("VM_XEN_LIBVIRT_URI") or DEFAULT_XEN_URI
        else:
            uri = read.string("VM_KVM_LIBVIRT_URI") or DEFAULT_KVM_URI
        settings = cls(
            uri=uri,
            domain_type=domain_type,
            xml_script=read.string("LIBVIRT_XML_SCRIPT"),
            xml_script_args=knobs.get("LIBVIRT_XML_SCRIPT_ARGS") or "",
            xen_bootloader=read.unquoted("XEN_BOOTLOADER"),
            xen_allow_hardware_vt_suspend=read.boolean("XEN_ALLOW_HARDWARE_VT_SUSPEND"),
            snapshot_disk_default=read.boolean("VM_SNAPSHOT_DISK"),
            compress_checkpoints=read.boolean("VM_CHECKPOINT_COMPRESSION", True),
            bridge_script=read_bridge_script(knobs),
            uefi_loader=read.unquoted("VM_UEFI_LOADER"),
            uefi_nvram_template=read.unquoted("VM_UEFI_NVRAM_TEMPLATE"),
        )
        return settings, read.warnings
