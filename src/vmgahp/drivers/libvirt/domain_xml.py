"""The built-in libvirt domain XML for a job, built as an element tree.

Every value from the job (name, paths, devices, MAC) goes in through
ElementTree, which escapes it; nothing is pasted into XML text. The shape
follows the C++ gahp's built-in XML (spec 4.8) with these deliberate fixes:

* ACPI is always on, so a guest's poweroff really ends the domain and an ACPI
  shutdown request reaches the guest;
* a disk is a CD-ROM when its file name ends in ``.iso`` (not when ``.iso``
  appears anywhere in the path), and CD-ROMs are always read-only;
* every disk the job may not write is read-only (the C++ only marks ``r``);
* every NIC carries the job's MAC, and a virtio model on KVM.

Xen shapes (libvirt's libxl driver; checked against libvirt's RNG schema and
golden files in ``tests/golden/xen``, see ``tests/driver/test_xen.py``):

* PV with a kernel path: ``<os><type>linux</type><kernel/><initrd/>
  <cmdline>root=ROOT PARAMS</cmdline></os>``. The root device goes into the
  command line: libxl ignores libvirt's ``<root>`` element.
* PV with ``xen_kernel = included``: ``<bootloader>XEN_BOOTLOADER</bootloader>``
  beside ``<os><type>linux</type></os>``; the job's kernel parameters go in
  ``<cmdline>``, which libxl hands to the bootloader as one ``--args=...``
  argument (libxl's ``make_bootloader_args``). ``<bootloader_args>`` is
  not used: libvirt splits it on blanks, which breaks multi-word parameters.
  (The C++ drops the parameters of a bootloader guest.)
* a bridged NIC carries ``<script path=.../>`` when VM_BRIDGE_SCRIPT names
  a vif script (``bridge_script.py``); libxl runs it to plug the vif in.
* HVM (``xen_kernel = vmx``): ``<os><type machine='xenfv'>hvm</type>
  <loader>hvmloader</loader><boot/></os>`` with ACPI/APIC/PAE. (The C++ wrote
  ``<type>linux</type>`` without a kernel, which no Xen can boot.)
* ``xvd*`` disks sit on ``bus='xen'`` (the paravirtual block device);
  ``hd*``/``sd*`` devices keep the bus libvirt derives (IDE/SCSI, emulated
  for HVM), so the job's CD-ROM image on the default ``hdc`` is an IDE
  CD-ROM for an HVM guest.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from vmgahp.errors import VmgahpError

if TYPE_CHECKING:  # pydantic loads with the first START, not with the driver
    from vmgahp.drivers.libvirt.firmware import Uefi
    from vmgahp.drivers.libvirt.job_ad import XenBoot
    from vmgahp.job.model import Disk, VmJob


XEN_HVMLOADER = "/usr/lib/xen/boot/hvmloader"
XEN_HVM_MACHINE = "xenfv"  # libxl's machine type for a fully virtualised guest
KVM_DOMAIN_TYPES = ("kvm", "qemu")
NETWORK_TYPES = ("nat", "bridge", "user")

# Characters XML 1.0 cannot carry at all, even escaped.
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class DomainXmlError(VmgahpError, ValueError):
    """The job cannot be expressed as a domain (a bug or a bad job value)."""


def build_domain_xml(
    job: VmJob,
    *,
    domain_type: str = "kvm",
    xen_bootloader: str = "",
    passt: bool = False,
    xen_bridge_script: str = "",
    bridge: str = "",
    uefi: Uefi | None = None,
) -> str:
    """The domain XML for ``job`` (no XML declaration).

    ``domain_type`` is the KVM virt type (``kvm``, or ``qemu`` for software
    emulation); Xen jobs are always ``xen``. ``passt`` says whether a
    ``user`` NIC may use the passt backend. ``bridge`` is the host's bridge
    for a job whose own ``bridge_interface`` is empty; ``xen_bridge_script``
    the vif script of a Xen bridged NIC; ``uefi`` the firmware of a
    ``firmware = uefi`` KVM job (its NVRAM file is in the working dir).
    """
    if job.vm_type == "xen":
        root = _xen_domain(job, xen_bootloader, xen_bridge_script, bridge)
    else:
        if domain_type not in KVM_DOMAIN_TYPES:
            raise DomainXmlError(f"KVM domain type must be one of {KVM_DOMAIN_TYPES}, not {domain_type!r}")
        if job.firmware == "uefi" and uefi is None:
            raise DomainXmlError("a UEFI job needs the host's UEFI firmware")
        root = _kvm_domain(job, domain_type, passt, bridge, uefi if job.firmware == "uefi" else None)
    return ET.tostring(root, encoding="unicode")


# ------------------------------------------------------------------ builders
def _header(domain_type: str, job: VmJob) -> ET.Element:
    root = ET.Element("domain", type=domain_type)
    _sub(root, "name", job.name)
    _sub(root, "memory", str(job.memory_mib * 1024), unit="KiB")
    _sub(root, "vcpu", str(max(1, job.vcpus)))
    return root


def _lifecycle(root: ET.Element) -> None:
    # A powered-off or crashed guest ends the domain (the gahp then reports
    # Stopped); a reboot stays inside the job.
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")


def _hvm_os(root: ET.Element, job: VmJob, loader: str = "", machine: str = "", uefi: Uefi | None = None) -> None:
    os_el = _sub(root, "os")
    type_attrs = {"arch": uefi.arch} if uefi is not None else {}
    machine = machine or (uefi.machine if uefi is not None else "")
    if machine:
        type_attrs["machine"] = machine
    _sub(os_el, "type", "hvm", **type_attrs)
    if loader:
        _sub(os_el, "loader", loader)
    if uefi is not None:
        # The code is shared and read-only; the variables are the job's own file.
        from vmgahp.drivers.libvirt.firmware import nvram_path

        _sub(os_el, "loader", uefi.loader, readonly="yes", type="pflash")
        _sub(os_el, "nvram", nvram_path(job.working_dir), template=uefi.template)
    _sub(os_el, "boot", dev="hd")
    if any(d.is_cdrom for d in job.disks):
        _sub(os_el, "boot", dev="cdrom")


def _hvm_features(root: ET.Element, pae: bool = False, apic: bool = True) -> None:
    features = _sub(root, "features")
    _sub(features, "acpi")  # required: without it poweroff leaves the domain running
    if apic:  # an x86 device: ARM guests have a GIC instead
        _sub(features, "apic")
    if pae:
        _sub(features, "pae")


def _kvm_domain(job: VmJob, domain_type: str, passt: bool, bridge: str = "", uefi: Uefi | None = None) -> ET.Element:
    root = _header(domain_type, job)
    _hvm_os(root, job, uefi=uefi)
    _hvm_features(root, apic=uefi is None or uefi.arch != "aarch64")
    _lifecycle(root)
    devices = _sub(root, "devices")
    for disk in job.disks:
        _disk(devices, disk)
    _interface(devices, job, virtio=True, passt=passt, bridge=bridge)
    _sub(devices, "serial", type="pty")
    _sub(devices, "console", type="pty")
    if job.vnc_console:
        _vnc(devices)
    return root


def _xen_domain(job: VmJob, xen_bootloader: str, bridge_script: str = "", bridge: str = "") -> ET.Element:
    boot = job.extras
    if boot is None:
        raise DomainXmlError("a Xen job needs its kernel settings (VMPARAM_Xen_Kernel)")
    root = _header("xen", job)
    hvm = boot.mode == "vmx"
    if hvm:
        _hvm_os(root, job, loader=XEN_HVMLOADER, machine=XEN_HVM_MACHINE)
        _hvm_features(root, pae=True)
    elif boot.mode == "included":
        bootloader = boot.bootloader or xen_bootloader
        if not bootloader:
            raise DomainXmlError("xen_kernel = included needs XEN_BOOTLOADER")
        _sub(root, "bootloader", bootloader)
        os_el = _sub(root, "os")
        _sub(os_el, "type", "linux")
        if boot.kernel_params:
            _sub(os_el, "cmdline", boot.kernel_params)
    else:
        _pv_kernel_os(root, boot)
    _lifecycle(root)
    devices = _sub(root, "devices")
    for disk in job.disks:
        _disk(devices, disk, xen=True)
    if job.networking_type == "user":
        raise DomainXmlError("Xen has no user networking")
    # Xen picks its own paravirtual NIC; virtio is a KVM device.
    _interface(devices, job, virtio=False, passt=False, script=bridge_script, bridge=bridge)
    if hvm:
        _sub(devices, "serial", type="pty")
    _sub(devices, "console", type="pty")
    if job.vnc_console:
        _vnc(devices)
    return root


def _pv_kernel_os(root: ET.Element, boot: XenBoot) -> None:
    os_el = _sub(root, "os")
    _sub(os_el, "type", "linux")
    _sub(os_el, "kernel", boot.kernel)
    if boot.initrd:
        _sub(os_el, "initrd", boot.initrd)
    cmdline = " ".join(part for part in (f"root={boot.root}" if boot.root else "", boot.kernel_params) if part)
    if cmdline:
        _sub(os_el, "cmdline", cmdline)


def _disk(devices: ET.Element, disk: Disk, xen: bool = False) -> None:
    cdrom = disk.is_cdrom
    el = _sub(devices, "disk", type="file", device="cdrom" if cdrom else "disk")
    if disk.format:
        _sub(el, "driver", name="qemu", type=disk.format)
    _sub(el, "source", file=disk.path)
    # KVM: no bus, libvirt derives it from the device prefix (vd*, hd*, sd*).
    # Xen: xvd* is the paravirtual block device, said explicitly.
    if xen and disk.device.startswith("xvd"):
        _sub(el, "target", dev=disk.device, bus="xen")
    else:
        _sub(el, "target", dev=disk.device)
    if cdrom or not disk.writable:
        _sub(el, "readonly")


def _interface(devices: ET.Element, job: VmJob, *, virtio: bool, passt: bool, script: str = "",
               bridge: str = "") -> None:
    kind = job.networking_type
    if not kind:
        return
    if kind not in NETWORK_TYPES:
        raise DomainXmlError(f"unknown networking type {kind!r}")
    if kind == "nat":
        el = _sub(devices, "interface", type="network")
        _sub(el, "source", network="default")
    elif kind == "bridge":
        el = _sub(devices, "interface", type="bridge")
        if job.bridge_interface or bridge:
            _sub(el, "source", bridge=job.bridge_interface or bridge)
        if script:
            _sub(el, "script", path=script)
    else:
        el = _sub(devices, "interface", type="user")
    if job.mac:
        _sub(el, "mac", address=job.mac)
    if virtio:
        _sub(el, "model", type="virtio")
    if kind == "user" and passt:
        _sub(el, "backend", type="passt")


def _vnc(devices: ET.Element) -> None:
    # Loopback only: the console is for the machine's admin, not the network.
    _sub(devices, "graphics", type="vnc", autoport="yes", listen="127.0.0.1")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    for value in (text, *attrs.values()):
        if value is not None and _ILLEGAL_XML.search(value):
            raise DomainXmlError(f"<{tag}> value {value!r} holds a character XML cannot carry")
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el
