"""UEFI firmware in the domain XML, without a guest (the boot is tests/real/test_uefi_real.py).

x86_64 and aarch64 XML is checked against libvirt's RNG schema
(``virt-xml-validate``) and defined on the test hypervisor; the job-ad rules
and the NVRAM file's handling are checked on their own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from helpers import on_test_hypervisor
from vmgahp.drivers.libvirt import firmware
from vmgahp.drivers.libvirt.connection import install_error_handler
from vmgahp.drivers.libvirt.domain_xml import DomainXmlError, build_domain_xml
from vmgahp.drivers.libvirt.driver import LibvirtHypervisor
from vmgahp.errors import GahpError
from vmgahp.job.jobad import JobAd
from vmgahp.job.model import build_job
from vmgahp.job.networking import NetworkPlan
from vmgahp.protocol import tokens

X86 = firmware.Uefi("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd", "x86_64", "")
ARM = firmware.Uefi.for_host(arch="aarch64")


def ad(work: Path, vm_type: str = "kvm", **extra: str) -> JobAd:
    lines = [f'VM_WORKING_DIR = "{work}"', "ClusterId = 7330", "ProcId = 0", 'User = "seed@example.org"',
             f'JobVMType = "{vm_type}"', "JobVMMemory = 128", 'VMPARAM_vm_Disk = "disk.img:vda:w:raw"']
    if vm_type == "xen":
        lines += ['VMPARAM_Xen_Kernel = "vmx"', "JobVMHardwareVT = true"]
        lines[-3] = 'VMPARAM_vm_Disk = "disk.img:hda:w:raw"'
    return JobAd(lines + [f"{k} = {v}" for k, v in extra.items()])


def job(work: Path, vm_type: str = "kvm", **extra: str):
    (work / "disk.img").write_bytes(b"\0" * 512)
    settings = on_test_hypervisor(vm_type, XEN_BOOTLOADER="/bin/true", VM_HARDWARE_VT=True)
    hypervisor = LibvirtHypervisor(settings, vm_type)
    return build_job(ad(work, vm_type, **extra), settings, NetworkPlan((), ""), None, hypervisor), hypervisor


@pytest.fixture(scope="module")
def conn():
    install_error_handler()
    connection = libvirt.open("test:///default")
    yield connection
    connection.close()


def validate(tmp_path: Path, xml: str) -> None:
    if shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None:
        pytest.skip("virt-xml-validate or xmllint not installed")
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    done = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("uefi", [X86, ARM], ids=["x86_64", "aarch64"])
def test_uefi_xml_is_schema_valid(uefi: firmware.Uefi, tmp_path: Path, conn) -> None:
    vm, _ = job(tmp_path, VMPARAM_Firmware='"uefi"')
    xml = build_domain_xml(vm, domain_type="qemu", uefi=uefi)
    root = ET.fromstring(xml)
    loader, nvram = root.find("os/loader"), root.find("os/nvram")
    assert (loader.text, loader.get("readonly"), loader.get("type")) == (uefi.loader, "yes", "pflash")
    assert nvram.text == str(tmp_path / firmware.NVRAM_NAME) and nvram.get("template") == uefi.template
    assert root.find("os/type").get("arch") == uefi.arch
    validate(tmp_path, xml)
    if uefi.arch == "aarch64":
        assert root.find("os/type").get("machine") == "virt" and root.find("features/apic") is None
        return  # the test hypervisor has no aarch64 guests
    dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        assert ET.fromstring(dom.XMLDesc(0)).findtext("os/nvram") == str(tmp_path / firmware.NVRAM_NAME)
    finally:
        dom.undefine()


def test_bios_is_the_default(tmp_path: Path) -> None:
    vm, hypervisor = job(tmp_path)
    assert vm.firmware == "bios"
    root = ET.fromstring(hypervisor.builtin_xml(vm))
    assert root.find("os/loader") is None and root.find("os/nvram") is None


def test_bad_value_and_xen_are_the_jobs_fault(tmp_path: Path) -> None:
    with pytest.raises(GahpError) as info:
        job(tmp_path, VMPARAM_Firmware='"coreboot"')
    assert info.value.token == tokens.KVM_INVALID_DISK_PARAM  # held: the job must be fixed
    with pytest.raises(GahpError) as info:
        job(tmp_path, "xen", VMPARAM_Firmware='"uefi"')
    assert info.value.token == tokens.XEN_INVALID_DISK_PARAM
    assert job(tmp_path, VMPARAM_Firmware='"EFI"')[0].firmware == "uefi"


def test_missing_firmware_is_the_hosts_fault(tmp_path: Path) -> None:
    settings = on_test_hypervisor("kvm", VM_UEFI_LOADER=str(tmp_path / "none.fd"))
    hypervisor = LibvirtHypervisor(settings, "kvm")
    vm, _ = job(tmp_path, VMPARAM_Firmware='"uefi"')
    with pytest.raises(GahpError) as info:
        hypervisor.domain_xml(vm)
    assert info.value.token == tokens.CRITICAL and "none.fd" in info.value.detail  # requeued elsewhere
    with pytest.raises(DomainXmlError):
        build_domain_xml(vm)  # no firmware given


@pytest.mark.skipif(not os.path.exists(X86.template), reason="ovmf not installed")
def test_nvram_is_copied_once_and_kept(tmp_path: Path) -> None:
    path = firmware.prepare_nvram(str(tmp_path), X86, None)
    assert Path(path).read_bytes() == Path(X86.template).read_bytes()
    Path(path).write_bytes(b"the guest's own variables")
    assert firmware.prepare_nvram(str(tmp_path), X86, None) == path
    assert Path(path).read_bytes() == b"the guest's own variables"  # a restored one is never replaced


def test_nvram_found_and_moved_in_saved_xml(tmp_path: Path) -> None:
    vm, _ = job(tmp_path, VMPARAM_Firmware='"uefi"')
    xml = build_domain_xml(vm, uefi=X86)
    assert firmware.nvram_in(xml, str(tmp_path)) == firmware.NVRAM_NAME
    assert firmware.nvram_in(xml, "/elsewhere") is None
    moved = firmware.retarget_nvram(xml, "/var/lib/condor/execute/dir_2")
    assert ET.fromstring(moved).findtext("os/nvram") == "/var/lib/condor/execute/dir_2/" + firmware.NVRAM_NAME
    assert firmware.retarget_nvram(xml, str(tmp_path)) is None
