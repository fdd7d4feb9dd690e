"""``vmgahp run`` with ``vm_type = xen``: every xen_* submit command, from the submit file to the domain XML.

Each case maps a submit description to the job ad (as condor_submit would),
then does what the starter and the gahp do with that ad: the transfer list is
copied into a scratch directory, ``build_job`` applies the Xen rules of spec
4.3, the CD-ROM is attached and the built-in domain XML is defined, with
libvirt's schema validation, on the test driver.
"""

from __future__ import annotations

import shutil
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from helpers import settings
from vmgahp.drivers.libvirt.domain_xml import build_domain_xml
from vmgahp.drivers.libvirt.driver import LibvirtHypervisor
from vmgahp.job.jobad import JobAd
from vmgahp.job.model import VmJob, build_job
from vmgahp.job.networking import NetworkPlan
from vmgahp.run.submit import Identity, Job, SubmitError, build, load
from vmgahp.vm.cdrom import attach_cdrom

ALICE = Identity("alice", "example.org")
BOOTLOADER = "/usr/lib/xen/bin/pygrub"
SETTINGS = settings("xen", VM_MEMORY="2048", XEN_BOOTLOADER=BOOTLOADER, VM_HARDWARE_VT="true")

EVERY_XEN_COMMAND = """\
universe           = vm
vm_type            = xen
executable         = xen-job
vm_memory          = 512
xen_kernel         = vmlinuz
xen_initrd         = initrd.img
xen_root           = /dev/xvda1
xen_kernel_params  = "console=hvc0 quiet"
xen_disk           = root.img:xvda:w, {shared}/data.img:xvdb:r
xen_cdrom_device   = xvdc
vm_cdrom_files     = job.sh
xen_transfer_files = extra.bin, {shared}/other.bin
transfer_input_files = vmlinuz, initrd.img, root.img
queue
"""


def submit(tmp_path: Path, text: str, files: tuple[str, ...]) -> Job:
    submit_dir = tmp_path / "submit"
    shared = tmp_path / "shared"
    for directory in (submit_dir, shared):
        directory.mkdir(exist_ok=True)
    for name in files:
        (submit_dir / name).write_bytes(b"x")
    for name in ("data.img", "other.bin"):
        (shared / name).write_bytes(b"x")
    path = submit_dir / "job.sub"
    path.write_text(textwrap.dedent(text).format(shared=shared))
    return build(load(path), ALICE)


def on_the_execute_node(tmp_path: Path, job: Job) -> VmJob:
    """Transfer the inputs into a scratch dir and run the gahp's START checks on the ad."""
    workdir = tmp_path / "execute" / "dir_4242"
    workdir.mkdir(parents=True)
    for item in job.inputs:
        shutil.copy(item.source, workdir / (item.name or item.source.name))
    ad = JobAd([f'VM_WORKING_DIR = "{workdir}"', *job.ad_lines()])
    assert ad.dropped == []
    return attach_cdrom(build_job(ad, SETTINGS, NetworkPlan((), ""), None, LibvirtHypervisor(SETTINGS, "xen")))


def defined(conn: libvirt.virConnect, vm: VmJob) -> ET.Element:
    dom = conn.defineXMLFlags(build_domain_xml(vm), libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        return ET.fromstring(dom.XMLDesc(0))
    finally:
        dom.undefine()


def test_every_xen_command_maps_to_its_attribute(tmp_path: Path) -> None:
    job = submit(
        tmp_path, EVERY_XEN_COMMAND, files=("vmlinuz", "initrd.img", "root.img", "job.sh", "extra.bin")
    )
    ad = job.ad
    assert ad["JobVMType"] == '"xen"'
    assert ad["VMPARAM_Xen_Kernel"] == '"vmlinuz"'
    assert ad["VMPARAM_Xen_Initrd"] == '"initrd.img"'
    assert ad["VMPARAM_Xen_Root"] == '"/dev/xvda1"'
    assert ad["VMPARAM_Xen_Kernel_Params"] == '"console=hvc0 quiet"'  # quotes trimmed
    assert ad["VMPARAM_vm_Disk"] == f'"root.img:xvda:w, {tmp_path}/shared/data.img:xvdb:r"'  # unchanged
    assert ad["VMPARAM_Xen_CDROM_Device"] == '"xvdc"'
    assert ad["VMPARAM_CDROM_Files"] == '"job.sh"'
    assert ad["VMPARAM_Xen_Transfer_Files"] == '"extra.bin,other.bin"'  # basenames
    assert "JobVMHardwareVT" not in ad  # only xen_kernel = vmx sets it
    # The kernel, initrd, relative disk, CD-ROM file and xen_transfer_files travel; the shared disk does not.
    assert sorted(i.name for i in job.inputs) == [
        "extra.bin", "initrd.img", "job.sh", "other.bin", "root.img", "vmlinuz",
    ]


def test_every_xen_command_reaches_the_domain_xml(tmp_path: Path, test_conn) -> None:
    job = submit(
        tmp_path, EVERY_XEN_COMMAND, files=("vmlinuz", "initrd.img", "root.img", "job.sh", "extra.bin")
    )
    vm = on_the_execute_node(tmp_path, job)
    workdir = Path(vm.working_dir)
    assert vm.name == "alice_example.org_1.0"
    assert vm.extras is not None and vm.extras.mode == "kernel"
    # Transferred kernel and initrd are used from the scratch dir (spec 4.3).
    assert (vm.extras.kernel, vm.extras.initrd) == (str(workdir / "vmlinuz"), str(workdir / "initrd.img"))
    assert (vm.extras.root, vm.extras.kernel_params) == ("/dev/xvda1", "console=hvc0 quiet")
    assert [(d.device, d.transferred) for d in vm.disks] == [("xvda", True), ("xvdb", False), ("xvdc", False)]
    assert vm.cdrom_device == "xvdc"
    root = defined(test_conn, vm)
    assert root.findtext("os/kernel") == str(workdir / "vmlinuz")
    assert root.findtext("os/cmdline") == "root=/dev/xvda1 console=hvc0 quiet"
    targets = {t.get("dev"): t.get("bus") for t in root.iter("target") if t.get("dev")}
    assert targets == {"xvda": "xen", "xvdb": "xen", "xvdc": "xen"}
    assert root.find("devices/disk[@device='cdrom']/target").get("dev") == "xvdc"


def test_xen_kernel_included(tmp_path: Path, test_conn) -> None:
    job = submit(
        tmp_path,
        """\
        universe          = vm
        vm_type           = xen
        executable        = pv
        vm_memory         = 256
        xen_kernel        = Included
        xen_kernel_params = console=hvc0
        xen_disk          = root.img:xvda:w
        transfer_input_files = root.img
        queue
        """,
        files=("root.img",),
    )
    assert job.ad["VMPARAM_Xen_Kernel"] == '"Included"'  # the gahp compares case-insensitively
    assert [i.name for i in job.inputs] == ["root.img"]  # nothing to transfer for the kernel
    vm = on_the_execute_node(tmp_path, job)
    assert (vm.extras.mode, vm.extras.bootloader) == ("included", BOOTLOADER)
    root = defined(test_conn, vm)
    assert root.findtext("bootloader") == BOOTLOADER
    assert root.findtext("os/cmdline") == "console=hvc0"


def test_xen_kernel_vmx_is_hvm(tmp_path: Path, test_conn) -> None:
    job = submit(
        tmp_path,
        """\
        universe       = vm
        vm_type        = xen
        executable     = hvm
        vm_memory      = 256
        xen_kernel     = vmx
        vm_disk        = hvm.img:hda:w
        transfer_input_files = hvm.img
        vm_cdrom_files = job.sh
        queue
        """,
        files=("hvm.img", "job.sh"),
    )
    assert job.ad["JobVMHardwareVT"] == "true"  # submit sets it for vmx
    assert "VMPARAM_Xen_CDROM_Device" not in job.ad
    vm = on_the_execute_node(tmp_path, job)
    assert vm.extras.mode == "vmx" and vm.hardware_vt
    assert vm.cdrom_device == "hdc"  # the default
    root = defined(test_conn, vm)
    assert root.find("os/type").get("machine") == "xenfv" and root.findtext("os/type") == "hvm"
    assert root.find("devices/disk[@device='cdrom']/target").attrib == {"dev": "hdc", "bus": "ide"}


def test_xen_rules_at_submit(tmp_path: Path) -> None:
    base = "universe = vm\nvm_type = xen\nexecutable = x\nvm_memory = 256\nxen_disk = root.img:xvda:w\n"
    with pytest.raises(SubmitError, match="xen_kernel cannot be found"):
        submit(tmp_path, base + "queue\n", files=("root.img",))
    with pytest.raises(SubmitError, match="xen_root cannot be found"):
        submit(tmp_path, base + "xen_kernel = vmlinuz\nqueue\n", files=("root.img", "vmlinuz"))
    with pytest.raises(SubmitError, match="xen_initrd, xen_kernel must be a real kernel file"):
        submit(tmp_path, base + "xen_kernel = included\nxen_initrd = initrd.img\nqueue\n",
               files=("root.img", "initrd.img"))
    with pytest.raises(SubmitError, match="just a device name"):
        submit(tmp_path, base + "xen_kernel = included\nxen_cdrom_device = hdc:cdrom\nqueue\n", files=("root.img",))
    # condor_submit 25 transfers no kernel: one that nothing transfers is not found on a pool
    job = submit(tmp_path, base + "xen_kernel = missing-vmlinuz\nxen_root = /dev/xvda\nqueue\n", files=("root.img",))
    assert [(h.command, h.lines) for h in job.hints] == [
        ("xen_disk", ("vm_disk = root.img:xvda:w",)),
        ("xen_disk", ("transfer_input_files = root.img",)),
        ("xen_kernel", ("transfer_input_files = missing-vmlinuz",)),
    ]
    assert "VMGAHP_ERR_JOBCLASSAD_XEN_KERNEL_NOT_FOUND" in job.hints[2].reason


def test_vm_disk_wins_over_xen_disk(tmp_path: Path) -> None:
    job = submit(
        tmp_path,
        "universe = vm\nvm_type = xen\nexecutable = x\nvm_memory = 256\nxen_kernel = included\n"
        "vm_disk = a.img:xvda:w\nxen_disk = b.img:xvda:w\nqueue\n",
        files=("a.img", "b.img"),
    )
    assert job.ad["VMPARAM_vm_Disk"] == '"a.img:xvda:w"'
    assert any("xen_disk is ignored" in w for w in job.warnings)


def test_xen_commands_are_ignored_for_kvm(tmp_path: Path) -> None:
    job = submit(
        tmp_path,
        "universe = vm\nvm_type = kvm\nexecutable = x\nvm_memory = 256\nvm_disk = a.img:vda:w\n"
        "xen_kernel = included\nxen_root = /dev/xvda\nxen_cdrom_device = xvdc\nqueue\n",
        files=("a.img",),
    )
    assert not any(name.startswith("VMPARAM_Xen") for name in job.ad)
    for key in ("xen_kernel", "xen_root", "xen_cdrom_device"):
        assert any(f"{key} is ignored for vm_type = kvm" in w for w in job.warnings)
