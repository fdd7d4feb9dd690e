"""The built-in domain XML: shape, escaping, and libvirt's schema.

Every shape built here is also defined on libvirt's in-process test driver
with VIR_DOMAIN_DEFINE_VALIDATE, which checks it against libvirt's RNG schema
and runs libvirt's own parser over it.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from vmgahp.drivers.libvirt.domain_xml import XEN_HVMLOADER, DomainXmlError, build_domain_xml
from vmgahp.drivers.libvirt.job_ad import XenBoot
from vmgahp.job.model import Disk, VmJob

MAC = "52:54:00:12:34:56"


def kvm_job(**overrides: object) -> VmJob:
    fields: dict[str, object] = dict(
        vm_type="kvm",
        name="alice_example.org_42.0",
        working_dir="/var/lib/condor/execute/dir_1",
        memory_mib=128,
        vcpus=2,
        disks=(Disk(path="/var/lib/condor/execute/dir_1/disk.img", device="vda", permission="w", format="raw"),),
    )
    fields.update(overrides)
    return VmJob(**fields)  # type: ignore[arg-type]


def xen_job(boot: XenBoot, **overrides: object) -> VmJob:
    fields: dict[str, object] = dict(
        vm_type="xen",
        name="bob_7.1",
        working_dir="/tmp/w",
        memory_mib=256,
        disks=(Disk(path="/images/xen.img", device="xvda", permission="w"),),
        extras=boot,
    )
    fields.update(overrides)
    return VmJob(**fields)  # type: ignore[arg-type]


def parse(xml: str) -> ET.Element:
    assert not xml.startswith("<?xml"), "no XML declaration expected"
    return ET.fromstring(xml)


def assert_valid(conn: libvirt.virConnect, xml: str) -> None:
    """libvirt's schema and parser accept the document."""
    dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        assert dom.name() == parse(xml).findtext("name")
    finally:
        dom.undefine()


# ------------------------------------------------------------------- KVM
def test_kvm_header_and_lifecycle() -> None:
    root = parse(build_domain_xml(kvm_job(), domain_type="kvm"))
    assert root.tag == "domain" and root.get("type") == "kvm"
    assert root.findtext("name") == "alice_example.org_42.0"
    memory = root.find("memory")
    assert memory is not None and memory.get("unit") == "KiB" and memory.text == str(128 * 1024)
    assert root.findtext("vcpu") == "2"
    assert root.findtext("os/type") == "hvm"
    assert [b.get("dev") for b in root.findall("os/boot")] == ["hd"]
    assert root.find("features/acpi") is not None and root.find("features/apic") is not None
    assert root.findtext("on_poweroff") == "destroy"
    assert root.findtext("on_reboot") == "restart"
    assert root.findtext("on_crash") == "destroy"
    assert root.find("devices/serial").get("type") == "pty"
    assert root.find("devices/console").get("type") == "pty"
    assert root.find("devices/interface") is None  # no networking asked
    assert root.find("devices/graphics") is None


def test_kvm_domain_type_is_configurable() -> None:
    assert parse(build_domain_xml(kvm_job(), domain_type="qemu")).get("type") == "qemu"
    with pytest.raises(DomainXmlError):
        build_domain_xml(kvm_job(), domain_type="xen")


def test_disks_readonly_rules_and_formats() -> None:
    disks = (
        Disk(path="/img/w.qcow2", device="vda", permission="w", format="qcow2"),
        Disk(path="/img/rw.img", device="vdb", permission="RW"),
        Disk(path="/img/r.img", device="vdc", permission="r"),
        Disk(path="/img/ro.img", device="vdd", permission="ro"),  # the C++ leaves this writable
        Disk(path="/img/upper.img", device="vde", permission="R"),
    )
    root = parse(build_domain_xml(kvm_job(disks=disks)))
    found = {d.find("target").get("dev"): d for d in root.findall("devices/disk")}
    assert list(found) == ["vda", "vdb", "vdc", "vdd", "vde"]
    for el in found.values():
        assert el.get("type") == "file" and el.get("device") == "disk"
        assert el.find("target").get("bus") is None  # libvirt infers it from the prefix
    assert found["vda"].find("driver").attrib == {"name": "qemu", "type": "qcow2"}
    assert found["vdb"].find("driver") is None  # no format given: libvirt decides
    assert found["vda"].find("source").get("file") == "/img/w.qcow2"
    readonly = {dev for dev, el in found.items() if el.find("readonly") is not None}
    assert readonly == {"vdc", "vdd", "vde"}


def test_cdrom_by_extension_only() -> None:
    disks = (
        Disk(path="/data/my.isotope.img", device="vda", permission="w"),
        Disk(path="/data/job.ISO", device="hdc", permission="w"),
        Disk(path="/data/iso/disk.img", device="vdb", permission="r"),
    )
    root = parse(build_domain_xml(kvm_job(disks=disks)))
    kinds = {d.find("target").get("dev"): d.get("device") for d in root.findall("devices/disk")}
    assert kinds == {"vda": "disk", "hdc": "cdrom", "vdb": "disk"}
    cdrom = next(d for d in root.findall("devices/disk") if d.get("device") == "cdrom")
    assert cdrom.find("readonly") is not None  # even though the job said w
    assert [b.get("dev") for b in root.findall("os/boot")] == ["hd", "cdrom"]


@pytest.mark.parametrize(
    ("kind", "extra", "iface_type", "source"),
    [
        ("nat", {}, "network", {"network": "default"}),
        ("bridge", {"bridge_interface": "br0"}, "bridge", {"bridge": "br0"}),
        ("user", {}, "user", None),
    ],
)
def test_kvm_interfaces_carry_mac_and_virtio(kind: str, extra: dict, iface_type: str, source: dict | None) -> None:
    root = parse(build_domain_xml(kvm_job(networking_type=kind, mac=MAC, **extra)))
    (iface,) = root.findall("devices/interface")
    assert iface.get("type") == iface_type
    assert iface.find("mac").get("address") == MAC
    assert iface.find("model").get("type") == "virtio"
    if source is None:
        assert iface.find("source") is None
    else:
        assert iface.find("source").attrib == source
    assert iface.find("backend") is None  # no passt unless it is available


def test_user_interface_uses_passt_when_available() -> None:
    root = parse(build_domain_xml(kvm_job(networking_type="user", mac=MAC), passt=True))
    assert root.find("devices/interface/backend").get("type") == "passt"
    # passt is for user networking only
    nat = parse(build_domain_xml(kvm_job(networking_type="nat"), passt=True))
    assert nat.find("devices/interface/backend") is None


def test_interface_without_mac() -> None:
    root = parse(build_domain_xml(kvm_job(networking_type="nat")))
    assert root.find("devices/interface/mac") is None


def test_vnc_console_on_loopback() -> None:
    root = parse(build_domain_xml(kvm_job(vnc_console=True)))
    assert root.find("devices/graphics").attrib == {"type": "vnc", "autoport": "yes", "listen": "127.0.0.1"}


def test_values_are_escaped() -> None:
    name = "o'brien&co<x>_1.0"
    path = "/data/it's & <mine>.img"
    xml = build_domain_xml(kvm_job(name=name, disks=(Disk(path=path, device="vda", permission="w"),)))
    assert "&amp;" in xml and "&lt;" in xml
    root = parse(xml)
    assert root.findtext("name") == name
    assert root.find("devices/disk/source").get("file") == path


def test_control_characters_are_refused() -> None:
    with pytest.raises(DomainXmlError):
        build_domain_xml(kvm_job(name="bad\x01name"))


# ------------------------------------------------------------------- Xen
def test_xen_pv_kernel() -> None:
    boot = XenBoot(kernel="/boot/vmlinuz", initrd="/boot/initrd.img", root="/dev/xvda1", kernel_params="ro quiet")
    root = parse(build_domain_xml(xen_job(boot), domain_type="qemu"))  # the KVM type does not apply
    assert root.get("type") == "xen"
    assert root.findtext("os/type") == "linux"
    assert root.findtext("os/kernel") == "/boot/vmlinuz"
    assert root.findtext("os/initrd") == "/boot/initrd.img"
    assert root.findtext("os/cmdline") == "root=/dev/xvda1 ro quiet"
    assert root.find("bootloader") is None
    assert root.find("features") is None  # a PV guest has no ACPI
    disk = root.find("devices/disk")
    assert disk.find("driver") is None and disk.find("target").get("dev") == "xvda"


def test_xen_pv_kernel_without_initrd_or_params() -> None:
    root = parse(build_domain_xml(xen_job(XenBoot(kernel="/boot/vmlinuz", root="/dev/xvda"))))
    assert root.find("os/initrd") is None
    assert root.findtext("os/cmdline") == "root=/dev/xvda"


def test_xen_included_kernel_uses_bootloader() -> None:
    root = parse(build_domain_xml(xen_job(XenBoot(kernel="included", bootloader="/usr/bin/pygrub"))))
    assert root.findtext("bootloader") == "/usr/bin/pygrub"
    assert root.find("os/kernel") is None
    # The configured bootloader is the fallback when the job model has none.
    root = parse(build_domain_xml(xen_job(XenBoot(kernel="included")), xen_bootloader="/usr/lib/xen/bin/pygrub"))
    assert root.findtext("bootloader") == "/usr/lib/xen/bin/pygrub"
    with pytest.raises(DomainXmlError):
        build_domain_xml(xen_job(XenBoot(kernel="included")))


def test_xen_hvm() -> None:
    disks = (
        Disk(path="/images/hvm.qcow2", device="hda", permission="w", format="qcow2"),
        Disk(path="/images/tools.iso", device="hdc", permission="r"),
    )
    root = parse(build_domain_xml(xen_job(XenBoot(kernel="vmx"), disks=disks)))
    assert root.findtext("os/type") == "hvm"
    assert root.findtext("os/loader") == XEN_HVMLOADER
    assert [b.get("dev") for b in root.findall("os/boot")] == ["hd", "cdrom"]
    assert root.find("features/acpi") is not None
    assert root.find("devices/disk/driver").attrib == {"name": "qemu", "type": "qcow2"}


def test_xen_interfaces_have_mac_but_no_virtio() -> None:
    boot = XenBoot(kernel="/boot/vmlinuz", root="/dev/xvda")
    root = parse(build_domain_xml(xen_job(boot, networking_type="bridge", bridge_interface="xenbr0", mac=MAC)))
    iface = root.find("devices/interface")
    assert iface.get("type") == "bridge" and iface.find("source").get("bridge") == "xenbr0"
    assert iface.find("mac").get("address") == MAC
    assert iface.find("model") is None
    with pytest.raises(DomainXmlError):
        build_domain_xml(xen_job(boot, networking_type="user"))


def test_xen_job_needs_boot_settings() -> None:
    with pytest.raises(DomainXmlError):
        build_domain_xml(xen_job(None))  # type: ignore[arg-type]


# ------------------------------------------------------ libvirt's schema
SHAPES = {
    "kvm-minimal": lambda: kvm_job(),
    "kvm-qemu-everything": lambda: kvm_job(
        networking_type="nat",
        mac=MAC,
        vnc_console=True,
        disks=(
            Disk(path="/img/a.qcow2", device="vda", permission="w", format="qcow2"),
            Disk(path="/img/b.img", device="sda", permission="r"),
            Disk(path="/img/c.img", device="hdb", permission="rw", format="raw"),
            Disk(path="/img/job.iso", device="hdc", permission="r"),
        ),
    ),
    "kvm-bridge": lambda: kvm_job(networking_type="bridge", bridge_interface="br0", mac=MAC),
    "kvm-user": lambda: kvm_job(networking_type="user", mac=MAC),
    "kvm-escaped": lambda: kvm_job(
        name="o'brien&co<x>_1.0", disks=(Disk(path="/data/it's & <mine>.img", device="vda", permission="w"),)
    ),
    "xen-pv-kernel": lambda: xen_job(
        XenBoot(kernel="/boot/vmlinuz", initrd="/boot/initrd.img", root="/dev/xvda1", kernel_params="ro"),
        networking_type="nat",
        mac="00:16:3e:01:02:03",
    ),
    "xen-pv-included": lambda: xen_job(
        XenBoot(kernel="included", bootloader="/usr/lib/xen/bin/pygrub"),
        networking_type="bridge",
        bridge_interface="xenbr0",
    ),
    "xen-hvm": lambda: xen_job(
        XenBoot(kernel="vmx"),
        vnc_console=True,
        disks=(
            Disk(path="/images/hvm.img", device="hda", permission="w", format="raw"),
            Disk(path="/images/tools.iso", device="hdc", permission="r"),
        ),
    ),
}


SCHEMA_CASES = [
    (shape, domain_type)
    for shape in sorted(SHAPES)
    for domain_type in (("xen",) if shape.startswith("xen") else ("kvm", "qemu"))
]


@pytest.mark.parametrize(("shape", "domain_type"), SCHEMA_CASES)
def test_schema_valid(test_conn: libvirt.virConnect, shape: str, domain_type: str) -> None:
    job = SHAPES[shape]()
    xml = build_domain_xml(job, domain_type="kvm" if domain_type == "xen" else domain_type)
    assert parse(xml).get("type") == domain_type
    assert_valid(test_conn, xml)


def test_passt_shape_valid_against_rng_schema(tmp_path: Path) -> None:
    """libvirt 9.0.0's parser refuses <backend type='passt'/> (its schema
    accepts it), so this shape is checked with the schema alone."""
    validator = shutil.which("virt-xml-validate")
    if validator is None or shutil.which("xmllint") is None:
        pytest.skip("virt-xml-validate/xmllint not installed")
    path = tmp_path / "passt.xml"
    path.write_text(build_domain_xml(kvm_job(networking_type="user", mac=MAC), passt=True))
    result = subprocess.run([validator, str(path), "domain"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------- hostile job ads
HOSTILE = "q\"uo'te <lt> &amp; \u00e9\u00df\u4e2d \\n"


@pytest.mark.parametrize("vm_type", ["kvm", "xen"])
def test_hostile_job_ad_strings_reach_the_xml_intact(tmp_path: Path, test_conn: libvirt.virConnect,
                                                      vm_type: str) -> None:
    """Quotes, <, &, ', a backslash-n and non-ASCII in every string attribute that
    reaches the domain XML, from the job ad through build_job: the document is
    schema-valid on libvirt's test driver and each value means what the job said."""
    from vmgahp.job.jobad import JobAd
    from vmgahp.job.model import build_job
    from vmgahp.job.networking import NetworkPlan

    def ad_string(text: str) -> str:  # old ClassAd syntax, as the starter prints it
        return '"' + text.replace('"', '\\"') + '"'

    disk = tmp_path / f"disk {HOSTILE}.img"
    disk.write_bytes(b"\0" * 512)
    kernel = tmp_path / f"vmlinuz {HOSTILE}"
    kernel.write_bytes(b"\0" * 512)
    device = "xvda" if vm_type == "xen" else "vda"
    lines = [
        f"VM_WORKING_DIR = {ad_string(str(tmp_path))}",
        f"User = {ad_string('alice ' + HOSTILE + '@example.org')}",
        "ClusterId = 7", "ProcId = 0", f'JobVMType = "{vm_type}"', "JobVMMemory = 64",
        f"VMPARAM_vm_Disk = {ad_string(f'{disk}:{device}:w:raw')}",
        "JobVMNetworking = true", 'JobVMNetworkingType = "nat"', 'JobVM_MACADDR = "52:54:00:aa:bb:cc"',
    ]
    if vm_type == "xen":
        lines += [f"VMPARAM_Xen_Kernel = {ad_string(str(kernel))}",
                  f"VMPARAM_Xen_Root = {ad_string('/dev/xvda1 ' + HOSTILE)}",
                  f"VMPARAM_Xen_Kernel_Params = {ad_string('console=hvc0 ' + HOSTILE)}"]
    ad = JobAd(lines)
    assert not ad.dropped
    from vmgahp.drivers.libvirt.driver import LibvirtHypervisor
    from vmgahp.settings import Settings

    job = build_job(ad, Settings(vm_memory=1024), NetworkPlan(("nat",), "nat"), None,
                    LibvirtHypervisor(Settings(vm_memory=1024), vm_type))
    xml = build_domain_xml(job, domain_type="qemu")
    root = parse(xml)
    assert root.findtext("name") == f"alice {HOSTILE}_example.org_7.0"
    assert root.find("devices/disk/source").get("file") == str(disk)
    assert root.find("devices/interface/mac").get("address") == "52:54:00:aa:bb:cc"
    if vm_type == "xen":
        assert root.findtext("os/kernel") == str(kernel)
        assert root.findtext("os/cmdline") == f"root=/dev/xvda1 {HOSTILE} console=hvc0 {HOSTILE}"
    assert_valid(test_conn, xml)
