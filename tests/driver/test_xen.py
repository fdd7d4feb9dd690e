"""The Xen backend through libvirt, verified without a Xen host (spec 4.2, 4.3, 4.8).

There is no Xen hypervisor here (ENVIRONMENT.md section 6): libvirt's test
driver accepts ``type='xen'`` domains, and libvirt's RNG schema says whether a
document is one libxl could be handed. So each Xen shape is checked three ways:

* **golden files** in ``tests/golden/xen/*.xml``: the domain XML vmgahp builds
  for a job ad, pretty-printed, with the scratch dir written as
  ``/var/lib/condor/execute/dir_4242`` and the shared dir as ``/shared/vm``;
* **libvirt's RNG schema**, twice: ``virt-xml-validate FILE domain`` over the
  golden file, and ``defineXMLFlags(xml, VIR_DOMAIN_DEFINE_VALIDATE)`` on
  ``test:///default`` over the XML of the real job;
* **the test hypervisor**: the domain is created transient and taken through
  suspend, resume, save, restore and destroy, and libvirt keeps the Xen parts.

Regenerate the golden files after a deliberate change of the XML:

    VMGAHP_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/driver/test_xen.py -q

then review ``git diff tests/golden/xen``.

The Xen job-ad tokens are checked here at the ``build_job`` level, and
``test_every_xen_token_is_reached`` makes sure each one also comes back over
the wire in a Xen transcript (``tests/transcripts/vmgahp``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from helpers import TESTS, settings
from vmgahp.drivers.libvirt.domain_xml import XEN_HVMLOADER, DomainXmlError, build_domain_xml
from vmgahp.drivers.libvirt.driver import LibvirtHypervisor
from vmgahp.errors import GahpError
from vmgahp.job.access import JobUser
from vmgahp.job.jobad import JobAd
from vmgahp.job.model import VmJob, build_job
from vmgahp.job.networking import NetworkPlan, plan_networking
from vmgahp.protocol import tokens
from vmgahp.settings import Settings
from vmgahp.vm.cdrom import attach_cdrom

HERE = TESTS
GOLDEN = HERE / "golden" / "xen"
TRANSCRIPTS = HERE / "transcripts" / "vmgahp"
UPDATE = os.environ.get("VMGAHP_UPDATE_GOLDEN") == "1"
WORKDIR_TEXT = "/var/lib/condor/execute/dir_4242"
SHARED_TEXT = "/shared/vm"
BOOTLOADER = "/usr/lib/xen/bin/pygrub"
MAC = "00:16:3e:12:34:56"

SETTINGS = settings(
    "xen", XEN_BOOTLOADER=BOOTLOADER, VM_HARDWARE_VT=True, VM_NETWORKING=True, VM_NETWORKING_TYPE="nat, bridge, user",
    VM_NETWORKING_BRIDGE_INTERFACE="xenbr0", VM_XEN_LIBVIRT_URI="test:///default",
)
NAT_BRIDGE = NetworkPlan(("nat", "bridge"), "nat")
NO_NET = NetworkPlan((), "")


# ------------------------------------------------------------------ fixtures
@pytest.fixture
def dirs():
    """A scratch dir with transferred inputs and a 'shared filesystem' dir.

    Under /tmp, world-searchable, so the job user (uid 1000) can reach them.
    """
    top = Path(tempfile.mkdtemp(prefix="vmgahp-xen-", dir="/tmp"))
    os.chmod(top, 0o755)
    workdir, shared = top / "dir_4242", top / "shared"
    for d in (workdir, shared, workdir / "cdrom"):
        d.mkdir()
        os.chmod(d, 0o755)
    for name in ("xen.img", "vmlinuz", "initrd.img"):
        (workdir / name).write_bytes(b"\0" * 512)
    (workdir / "cdrom" / "job.sh").write_text("#!/bin/sh\necho hello\n")
    for name in ("pv.img", "data.img", "hvm.img", "vmlinuz-shared"):
        (shared / name).write_bytes(b"\0" * 512)
    for path in (*workdir.rglob("*"), *shared.rglob("*")):
        if path.is_file():
            os.chmod(path, 0o666)
    try:
        yield workdir, shared
    finally:
        shutil.rmtree(top, ignore_errors=True)


def ad(workdir: Path, **attrs: str | None) -> JobAd:
    base: dict[str, str | None] = {
        "VM_WORKING_DIR": f'"{workdir}"',
        "ClusterId": "42",
        "ProcId": "0",
        "User": '"alice@example.org"',
        "JobVMType": '"xen"',
        "JobVMMemory": "512",
        "JobVM_VCPUS": "1",
        "JobVMCheckpoint": "false",
        "JobVMNetworking": "false",
        "VMPARAM_vm_Disk": '"xen.img:xvda:w"',
        "VMPARAM_Xen_Kernel": '"included"',
        "TransferInput": '"/home/alice/vm/xen.img"',
    }
    base.update(attrs)
    return JobAd([f"{name} = {value}" for name, value in base.items() if value is not None])


def job_for(workdir: Path, settings: Settings = SETTINGS, network: NetworkPlan = NO_NET,
            user: JobUser | None = None, **attrs: str | None) -> VmJob:
    return build_job(ad(workdir, **attrs), settings, network, user, LibvirtHypervisor(settings, "xen"))


def token_of(workdir: Path, **kwargs) -> str:
    with pytest.raises(GahpError) as info:
        job_for(workdir, **kwargs)
    return info.value.token


# --------------------------------------------------------------- the shapes
def _pv_kernel(workdir: Path, shared: Path) -> VmJob:
    """Kernel path: the transferred kernel and initrd (named as transferred, relative
    to the scratch dir) are used from the scratch dir."""
    return job_for(
        workdir,
        network=NAT_BRIDGE,
        VMPARAM_Xen_Kernel='"vmlinuz"',
        VMPARAM_Xen_Initrd='"initrd.img"',
        VMPARAM_Xen_Root='"/dev/xvda1"',
        VMPARAM_Xen_Kernel_Params='"console=hvc0 ro"',
        VMPARAM_vm_Disk=f'"xen.img:xvda:w, {shared}/data.img:xvdb:r"',
        TransferInput='"/home/alice/vm/xen.img,/home/alice/vm/vmlinuz,/home/alice/vm/initrd.img"',
        JobVMNetworking="true",
        JobVMNetworkingType='"nat"',
        JobVM_MACADDR=f'"{MAC}"',
    )


def _pv_bootloader(workdir: Path, shared: Path) -> VmJob:
    """xen_kernel = included: XEN_BOOTLOADER, a bridge, a CD-ROM on xvdc, a checkpointable shared disk."""
    return attach_cdrom(
        job_for(
            workdir,
            network=NAT_BRIDGE,
            VMPARAM_Xen_Kernel='"included"',
            VMPARAM_Xen_Kernel_Params='"console=hvc0 quiet"',
            VMPARAM_vm_Disk=f'"{shared}/pv.img:xvda:w"',
            TransferInput=None,
            JobVMCheckpoint="true",
            JobVMNetworking="true",
            JobVMNetworkingType='"bridge"',
            JobVM_MACADDR=f'"{MAC}"',
            VMPARAM_CDROM_Files=f'"{workdir}/cdrom/job.sh"',
            VMPARAM_Xen_CDROM_Device='"xvdc"',
        )
    )


def _hvm(workdir: Path, shared: Path) -> VmJob:
    """xen_kernel = vmx: hvmloader, an IDE disk, the job's CD-ROM on the default hdc, VNC."""
    return attach_cdrom(
        job_for(
            workdir,
            VMPARAM_Xen_Kernel='"vmx"',
            JobVMHardwareVT="true",
            JobVMVNCConsole="true",
            JobVM_VCPUS="2",
            VMPARAM_vm_Disk=f'"{shared}/hvm.img:hda:w:raw"',
            TransferInput=None,
            VMPARAM_CDROM_Files=f'"{workdir}/cdrom/job.sh"',
        )
    )


SHAPES = {"pv-kernel": _pv_kernel, "pv-bootloader": _pv_bootloader, "hvm": _hvm}


def xml_of(shape: str, workdir: Path, shared: Path) -> str:
    job = SHAPES[shape](workdir, shared)
    return LibvirtHypervisor(SETTINGS, "xen").builtin_xml(job)


def pretty(xml: str, workdir: Path, shared: Path) -> str:
    """The golden-file form: indented, scratch and shared dirs replaced by fixed paths."""
    text = xml.replace(str(workdir), WORKDIR_TEXT).replace(str(shared), SHARED_TEXT)
    root = ET.fromstring(text)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def define_validated(conn: libvirt.virConnect, xml: str) -> str:
    """Define with libvirt's schema validation, return libvirt's own XML, undefine."""
    dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        return dom.XMLDesc(0)
    finally:
        dom.undefine()


# ------------------------------------------------------------ golden + schema
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_golden(shape: str, dirs) -> None:
    workdir, shared = dirs
    text = pretty(xml_of(shape, workdir, shared), workdir, shared)
    path = GOLDEN / f"{shape}.xml"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with VMGAHP_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{shape}: the XML differs from {path} (VMGAHP_UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_golden_file_valid_with_virt_xml_validate(shape: str) -> None:
    if shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None:
        pytest.skip("virt-xml-validate (libvirt-clients) or xmllint (libxml2-utils) not installed")
    path = GOLDEN / f"{shape}.xml"
    result = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_virt_xml_validate_can_fail(tmp_path: Path) -> None:
    """A bootloader guest may not carry <kernel> outside <os>: the validator must say no."""
    if shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None:
        pytest.skip("virt-xml-validate or xmllint not installed")
    bad = (GOLDEN / "pv-bootloader.xml").read_text().replace("<bootloader>", "<kernel>/boot/k</kernel><bootloader>")
    path = tmp_path / "bad.xml"
    path.write_text(bad)
    result = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "fails to validate" in result.stdout + result.stderr


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_golden_and_real_xml_valid_on_test_driver(shape: str, dirs, test_conn) -> None:
    workdir, shared = dirs
    define_validated(test_conn, xml_of(shape, workdir, shared))
    define_validated(test_conn, (GOLDEN / f"{shape}.xml").read_text())


def test_test_driver_validation_can_fail(test_conn) -> None:
    bad = (GOLDEN / "hvm.xml").read_text().replace("<acpi />", "<acpi><bogus/></acpi>")
    with pytest.raises(libvirt.libvirtError, match="schema"):
        test_conn.defineXMLFlags(bad, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_lifecycle_on_test_hypervisor(shape: str, dirs, test_conn, tmp_path: Path) -> None:
    """Transient create, pause, unpause, save, restore, destroy: the calls the driver makes."""
    workdir, shared = dirs
    dom = test_conn.createXML(xml_of(shape, workdir, shared), 0)
    try:
        assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
        dom.suspend()
        assert dom.info()[0] == libvirt.VIR_DOMAIN_PAUSED
        dom.resume()
        dom.save(str(tmp_path / "xen.mem.ckpt"))
        with pytest.raises(libvirt.libvirtError):
            test_conn.lookupByName("alice_example.org_42.0")  # a saved transient domain is gone (Q2)
        test_conn.restore(str(tmp_path / "xen.mem.ckpt"))
        dom = test_conn.lookupByName("alice_example.org_42.0")
        assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert ET.fromstring(dom.XMLDesc(0)).get("type") == "xen"
    finally:
        dom.destroy()


# ------------------------------------------------------------- the Xen shapes
def test_pv_kernel_shape(dirs, test_conn) -> None:
    workdir, shared = dirs
    root = ET.fromstring(xml_of("pv-kernel", workdir, shared))
    assert root.get("type") == "xen"
    assert root.findtext("os/type") == "linux"
    # Transferred kernel and initrd are used from the scratch dir (spec 4.3).
    assert root.findtext("os/kernel") == str(workdir / "vmlinuz")
    assert root.findtext("os/initrd") == str(workdir / "initrd.img")
    # libxl ignores <root>: the root device goes into the kernel command line, before the params.
    assert root.findtext("os/cmdline") == "root=/dev/xvda1 console=hvc0 ro"
    assert root.find("os/root") is None and root.find("bootloader") is None
    assert [(t.get("dev"), t.get("bus")) for t in root.iter("target")] == [("xvda", "xen"), ("xvdb", "xen")]
    assert root.find("devices/interface").get("type") == "network"
    assert root.find("devices/interface/mac").get("address") == MAC
    assert root.find("devices/interface/model") is None  # virtio is a KVM device
    # libvirt keeps what libxl needs.
    kept = ET.fromstring(define_validated(test_conn, ET.tostring(root, encoding="unicode")))
    assert kept.findtext("os/cmdline") == "root=/dev/xvda1 console=hvc0 ro"
    assert kept.findtext("os/kernel") == str(workdir / "vmlinuz")


def test_pv_bootloader_shape(dirs, test_conn) -> None:
    workdir, shared = dirs
    root = ET.fromstring(xml_of("pv-bootloader", workdir, shared))
    assert root.findtext("bootloader") == BOOTLOADER
    assert root.find("bootloader_args") is None
    assert root.findtext("os/type") == "linux"
    assert root.find("os/kernel") is None and root.find("os/initrd") is None
    # libxl hands <cmdline> to the bootloader as one --args=... argument.
    assert root.findtext("os/cmdline") == "console=hvc0 quiet"
    cdrom = root.find("devices/disk[@device='cdrom']")
    assert cdrom.find("target").attrib == {"dev": "xvdc", "bus": "xen"}
    assert cdrom.find("readonly") is not None
    assert cdrom.find("source").get("file").startswith(str(workdir))
    iface = root.find("devices/interface")
    assert iface.get("type") == "bridge" and iface.find("source").get("bridge") == "xenbr0"
    kept = ET.fromstring(define_validated(test_conn, ET.tostring(root, encoding="unicode")))
    assert kept.findtext("bootloader") == BOOTLOADER
    assert kept.findtext("os/cmdline") == "console=hvc0 quiet"


def test_pv_bootloader_without_params_has_no_cmdline(dirs) -> None:
    workdir, _ = dirs
    xml = build_domain_xml(job_for(workdir))
    root = ET.fromstring(xml)
    assert root.findtext("bootloader") == BOOTLOADER
    assert root.find("os/cmdline") is None


def test_hvm_shape(dirs, test_conn) -> None:
    workdir, shared = dirs
    root = ET.fromstring(xml_of("hvm", workdir, shared))
    os_type = root.find("os/type")
    assert (os_type.text, os_type.get("machine")) == ("hvm", "xenfv")
    assert root.findtext("os/loader") == XEN_HVMLOADER
    assert [b.get("dev") for b in root.findall("os/boot")] == ["hd", "cdrom"]
    assert root.find("bootloader") is None and root.find("os/kernel") is None
    assert {f.tag for f in root.find("features")} == {"acpi", "apic", "pae"}
    assert root.findtext("vcpu") == "2"
    assert root.find("devices/graphics").get("type") == "vnc"
    cdrom = root.find("devices/disk[@device='cdrom']")
    assert cdrom.find("target").get("dev") == "hdc"  # the default CD-ROM device
    kept = ET.fromstring(define_validated(test_conn, ET.tostring(root, encoding="unicode")))
    assert kept.find("os/type").get("machine") == "xenfv"
    buses = {t.get("dev"): t.get("bus") for t in kept.iter("target") if t.get("dev")}
    assert buses["hda"] == "ide" and buses["hdc"] == "ide"  # emulated IDE for an HVM guest


def test_user_networking_never_reaches_xen_xml(dirs) -> None:
    workdir, _ = dirs
    job = job_for(workdir).model_copy(update={"networking_type": "user"})
    with pytest.raises(DomainXmlError):
        build_domain_xml(job)


# ----------------------------------------------------------- the Xen rules
def test_user_networking_is_not_offered_for_xen() -> None:
    hypervisor = LibvirtHypervisor(SETTINGS, "xen")
    plan = plan_networking(SETTINGS, user_supported=hypervisor._user_supported())
    assert plan.types == ("nat", "bridge") and plan.default == "nat"
    kvm = plan_networking(SETTINGS, user_supported=True)
    assert "user" in kvm.types
    assert hypervisor.network_plan().types == ("nat", "bridge")


def test_user_networking_job_is_mismatched(dirs) -> None:
    workdir, _ = dirs
    plan = LibvirtHypervisor(SETTINGS, "xen").network_plan()
    token = token_of(workdir, network=plan, JobVMNetworking="true", JobVMNetworkingType='"user"')
    assert token == tokens.JOBCLASSAD_MISMATCHED_NETWORKING_TYPE


def test_included_without_bootloader_is_critical(dirs) -> None:
    """Unreachable over the wire (start-up needs XEN_BOOTLOADER, spec 1.7/9), so checked here."""
    workdir, _ = dirs
    assert token_of(workdir, settings=settings("xen")) == tokens.CRITICAL


def test_vmx_needs_job_hardware_vt(dirs) -> None:
    workdir, _ = dirs
    assert token_of(workdir, VMPARAM_Xen_Kernel='"vmx"') == tokens.JOBCLASSAD_MISMATCHED_HARDWARE_VT
    off = settings("xen", XEN_BOOTLOADER=BOOTLOADER)
    token = token_of(workdir, settings=off, VMPARAM_Xen_Kernel='"vmx"', JobVMHardwareVT="true")
    assert token == tokens.JOBCLASSAD_MISMATCHED_HARDWARE_VT


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file unreadable for another uid needs root")
def test_unreadable_kernel_and_initrd(dirs) -> None:
    """Files that exist but the job user cannot read (the C++ checks as the job user)."""
    workdir, shared = dirs
    user = JobUser(1000, 1000)
    kernel = shared / "vmlinuz-shared"
    os.chmod(kernel, 0o600)  # root's
    token = token_of(workdir, user=user, VMPARAM_Xen_Kernel=f'"{kernel}"', VMPARAM_Xen_Root='"/dev/xvda1"')
    assert token == tokens.XEN_KERNEL_NOT_FOUND
    os.chmod(kernel, 0o644)
    os.chmod(workdir / "initrd.img", 0o600)
    token = token_of(
        workdir, user=user, VMPARAM_Xen_Kernel=f'"{kernel}"', VMPARAM_Xen_Initrd='"initrd.img"',
        VMPARAM_Xen_Root='"/dev/xvda1"',
    )
    assert token == tokens.XEN_INITRD_NOT_FOUND
    os.chmod(workdir / "initrd.img", 0o644)
    job = job_for(
        workdir, user=user, VMPARAM_Xen_Kernel=f'"{kernel}"', VMPARAM_Xen_Initrd='"initrd.img"',
        VMPARAM_Xen_Root='"/dev/xvda1"',
    )
    assert (job.extras.kernel, job.extras.initrd) == (str(kernel), str(workdir / "initrd.img"))


def test_kernel_and_initrd_checked_as_written(dirs) -> None:
    """xen_type.linux.cpp:1587-1619: the path the job wrote must be readable on this
    machine before a transferred file of the same name is used, so a submit-side
    path that is missing here fails even though 'vmlinuz' was transferred."""
    workdir, shared = dirs
    assert (workdir / "vmlinuz").exists() and (workdir / "initrd.img").exists()
    token = token_of(workdir, VMPARAM_Xen_Kernel='"/nonexistent/vmlinuz"', VMPARAM_Xen_Root='"/dev/xvda1"')
    assert token == tokens.XEN_KERNEL_NOT_FOUND
    token = token_of(
        workdir, VMPARAM_Xen_Kernel='"vmlinuz"', VMPARAM_Xen_Initrd='"/nonexistent/initrd.img"',
        VMPARAM_Xen_Root='"/dev/xvda1"',
    )
    assert token == tokens.XEN_INITRD_NOT_FOUND
    # A path that exists here and names a transferred file: the transferred copy is used.
    job = job_for(workdir, VMPARAM_Xen_Kernel=f'"{shared}/vmlinuz-shared"', VMPARAM_Xen_Root='"/dev/xvda1"')
    assert job.extras.kernel == str(shared / "vmlinuz-shared")


def test_checkpoint_needs_shared_disks(dirs) -> None:
    workdir, shared = dirs
    assert token_of(workdir, JobVMCheckpoint="true") == tokens.XEN_MISMATCHED_CHECKPOINT
    job = job_for(workdir, JobVMCheckpoint="true", VMPARAM_vm_Disk=f'"{shared}/pv.img:xvda:w"')
    assert job.checkpoint and not job.has_transferred_disk


def test_cdrom_device_clash_is_an_invalid_xen_disk(dirs) -> None:
    workdir, _ = dirs
    # The driver checks the clash while it reads the ad (the device lower-cased).
    with pytest.raises(GahpError) as info:
        job_for(workdir, VMPARAM_CDROM_Files=f'"{workdir}/cdrom/job.sh"', VMPARAM_Xen_CDROM_Device='"XVDA"')
    assert info.value.token == tokens.XEN_INVALID_DISK_PARAM
    assert "uses xvda, the CD-ROM device" in info.value.detail


# ---------------------------------------------------- every token over the wire
XEN_TOKENS = {
    tokens.XEN_NO_KERNEL_PARAM: "33_err_xen.txt",
    tokens.XEN_KERNEL_NOT_FOUND: "33_err_xen.txt",  # missing; unreadable: 92_err_xen_unreadable_files.txt
    tokens.XEN_INITRD_NOT_FOUND: "33_err_xen.txt",  # missing; unreadable: 92_err_xen_unreadable_files.txt
    tokens.XEN_NO_ROOT_DEVICE_PARAM: "33_err_xen.txt",
    tokens.XEN_NO_DISK_PARAM: "33_err_xen.txt",
    tokens.XEN_INVALID_DISK_PARAM: "33_err_xen.txt",
    tokens.XEN_MISMATCHED_CHECKPOINT: "33_err_xen.txt",
    tokens.JOBCLASSAD_MISMATCHED_HARDWARE_VT: "33_err_xen.txt",  # xen_kernel = vmx
    tokens.VM_NO_SUPPORT_SUSPEND: "35_xen_hvm_no_suspend.txt",
    tokens.VM_NO_SUPPORT_CHECKPOINT: "35_xen_hvm_no_suspend.txt",
    tokens.JOBCLASSAD_MISMATCHED_NETWORKING_TYPE: "91_xen_networking.txt",  # user is not offered for Xen
    tokens.CANNOT_READ_CDROM_FILE: "93_xen_cdrom.txt",
}


def test_xen_token_table_is_complete() -> None:
    """Every Xen-specific token of protocol/tokens.py is in the table (CRITICAL-for-the-bootloader is unit-tested)."""
    xen_specific = {value for name, value in vars(tokens).items() if name.startswith("XEN_") and isinstance(value, str)}
    assert xen_specific <= set(XEN_TOKENS)


@pytest.mark.parametrize("token", sorted(XEN_TOKENS))
def test_every_xen_token_is_reached(token: str) -> None:
    path = TRANSCRIPTS / XEN_TOKENS[token]
    text = path.read_text()
    assert "@env VMGAHP_VMTYPE=xen" in text, f"{path.name} is not a Xen gahp"
    assert re.search(rf"^< \d+ 1 {re.escape(token)}$", text, re.MULTILINE), f"{token} not answered in {path.name}"


# ------------------------------------------------------- VM_BRIDGE_SCRIPT
SCRIPT_SETTINGS = settings(
    "xen", XEN_BOOTLOADER=BOOTLOADER, VM_NETWORKING=True, VM_NETWORKING_TYPE="nat, bridge",
    VM_BRIDGE_SCRIPT="vif-bridge bridge=xenbr0", VM_XEN_LIBVIRT_URI="test:///default",
)


def _bridged_xml(workdir: Path, settings: Settings = SCRIPT_SETTINGS) -> str:
    hypervisor = LibvirtHypervisor(settings, "xen")
    job = job_for(workdir, settings=settings, network=hypervisor.network_plan(), JobVMNetworking="true",
                  JobVMNetworkingType='"bridge"', JobVM_MACADDR=f'"{MAC}"')
    return hypervisor.builtin_xml(job)


def test_bridge_script_names_the_script_and_the_bridge(dirs, test_conn, tmp_path: Path) -> None:
    """The talk's VM_BRIDGE_SCRIPT = vif-bridge bridge=xenbr0, with no
    VM_NETWORKING_BRIDGE_INTERFACE: bridge is offered, the vif gets the script
    and the bridge, and the XML passes libvirt's schema both ways."""
    workdir, _ = dirs
    assert LibvirtHypervisor(SCRIPT_SETTINGS, "xen").network_plan().types == ("nat", "bridge")
    xml = _bridged_xml(workdir)
    iface = ET.fromstring(xml).find("devices/interface")
    assert iface.get("type") == "bridge"
    assert iface.find("script").attrib == {"path": "vif-bridge"}
    assert iface.find("source").attrib == {"bridge": "xenbr0"}
    kept = ET.fromstring(define_validated(test_conn, xml)).find("devices/interface")
    assert kept.find("script").get("path") == "vif-bridge" and kept.find("source").get("bridge") == "xenbr0"
    if shutil.which("virt-xml-validate") and shutil.which("xmllint"):
        path = tmp_path / "bridged.xml"
        path.write_text(xml)
        result = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_bridge_interface_knob_wins_over_the_scripts_bridge(dirs) -> None:
    workdir, _ = dirs
    both = settings(
        "xen", XEN_BOOTLOADER=BOOTLOADER, VM_NETWORKING=True, VM_NETWORKING_TYPE="bridge",
        VM_NETWORKING_BRIDGE_INTERFACE="br1", VM_BRIDGE_SCRIPT="/etc/xen/scripts/vif-bridge bridge=xenbr0",
        VM_XEN_LIBVIRT_URI="test:///default",
    )
    iface = ET.fromstring(_bridged_xml(workdir, both)).find("devices/interface")
    assert iface.find("source").get("bridge") == "br1"
    assert iface.find("script").get("path") == "/etc/xen/scripts/vif-bridge"


def test_xen_bridge_script_is_read_first_and_nat_has_no_script(dirs) -> None:
    """The old C++ read XEN_BRIDGE_SCRIPT, then VM_BRIDGE_SCRIPT; only a bridged NIC runs it."""
    workdir, _ = dirs
    both = settings(
        "xen", XEN_BOOTLOADER=BOOTLOADER, VM_NETWORKING=True, VM_NETWORKING_TYPE="nat, bridge",
        XEN_BRIDGE_SCRIPT="vif-openvswitch bridge=ovs0", VM_BRIDGE_SCRIPT="vif-bridge bridge=xenbr0",
        VM_XEN_LIBVIRT_URI="test:///default",
    )
    iface = ET.fromstring(_bridged_xml(workdir, both)).find("devices/interface")
    assert (iface.find("script").get("path"), iface.find("source").get("bridge")) == ("vif-openvswitch", "ovs0")
    hypervisor = LibvirtHypervisor(both, "xen")
    nat = job_for(workdir, settings=both, network=hypervisor.network_plan(), JobVMNetworking="true",
                  JobVMNetworkingType='"nat"')
    assert ET.fromstring(hypervisor.builtin_xml(nat)).find("devices/interface/script") is None


def test_bridge_script_words_split() -> None:
    from vmgahp.drivers.libvirt.bridge_script import parse

    got = parse('vif-bridge bridge=xenbr0 netdev=eth0')
    assert (got.script, got.bridge, got.ignored) == ("vif-bridge", "xenbr0", ("netdev=eth0",))
    assert not parse("")
