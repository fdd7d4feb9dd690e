"""The libvirt driver against libvirt's in-process test hypervisor.

``test:///default`` runs inside this process (no daemon) and keeps its state
across every connection of the process, so each test uses its own domain
names. Faults the test driver cannot produce (a transport that breaks, a qemu
error text) are injected by wrapping the real connection.
"""

from __future__ import annotations

import os
import stat
import sys
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import libvirt
import pytest

from helpers import TEST_URI, TESTS, on_test_hypervisor
from vmgahp.drivers.base import DomainState, HostCheckError, HostError, HypervisorError, JobImageError, SavedState
from vmgahp.drivers.libvirt import driver as driver_module
from vmgahp.drivers.libvirt.driver import LibvirtHypervisor
from vmgahp.drivers.libvirt.job_ad import XenBoot
from vmgahp.drivers.libvirt.start_errors import job_at_fault
from vmgahp.drivers.libvirt.xml_script import script_input
from vmgahp.drivers.registry import load_hypervisor
from vmgahp.errors import GahpError
from vmgahp.job.model import Disk, VmJob
from vmgahp.protocol import tokens
from vmgahp.settings import Settings
from vmgahp.vm.failures import token_for

# Settings fields of earlier releases -> the knobs that set them now.
_KNOBS = {"kvm_uri": "VM_KVM_LIBVIRT_URI", "xen_uri": "VM_XEN_LIBVIRT_URI", "kvm_domain_type": "VM_KVM_DOMAIN_TYPE",
          "xml_script": "LIBVIRT_XML_SCRIPT", "xml_script_args": "LIBVIRT_XML_SCRIPT_ARGS",
          "xen_bootloader": "XEN_BOOTLOADER", "bridge_interface": "VM_NETWORKING_BRIDGE_INTERFACE"}


def settings(**overrides: Any) -> Settings:
    """Test-hypervisor settings; libvirt options by field name, the rest as Settings fields."""
    knobs = {_KNOBS[name]: overrides.pop(name) for name in list(overrides) if name in _KNOBS}
    return replace(on_test_hypervisor(**knobs), **overrides)


def make_job(tmp_path: Path, **overrides: Any) -> VmJob:
    fields: dict[str, Any] = dict(
        vm_type="kvm",
        name=f"test_{uuid.uuid4().hex[:8]}_1.0",
        working_dir=str(tmp_path),
        memory_mib=64,
        disks=(Disk(path=str(tmp_path / "disk.img"), device="vda", permission="w", format="raw"),),
        ad_text='JobVMType = "kvm"\nJobVMMemory = 64\n',
    )
    fields.update(overrides)
    return VmJob(**fields)


def libvirt_error(message: str, code: int, domain: int = libvirt.VIR_FROM_NONE) -> libvirt.libvirtError:
    """A libvirtError as libvirt would raise it (for fault injection)."""
    exc = libvirt.libvirtError(message)
    exc.err = (code, domain, message, libvirt.VIR_ERR_ERROR, None, None, None, -1, -1)
    return exc


class FaultyConn:
    """The real connection, with chosen methods replaced."""

    def __init__(self, real: libvirt.virConnect, **overrides: Callable[..., Any]) -> None:
        self._real = real
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        return self._overrides.get(name) or getattr(self._real, name)


@pytest.fixture
def hv() -> LibvirtHypervisor:
    hypervisor = LibvirtHypervisor(settings(), "kvm")
    yield hypervisor
    hypervisor.close()


@pytest.fixture
def raw_conn() -> libvirt.virConnect:
    conn = libvirt.open(TEST_URI)
    yield conn
    conn.close()


def domain_xml_of(conn: libvirt.virConnect, name: str) -> ET.Element:
    return ET.fromstring(conn.lookupByName(name).XMLDesc())


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# --------------------------------------------------------------- lifecycle
def test_registry_loads_this_driver() -> None:
    for vm_type in ("kvm", "xen"):
        hypervisor = load_hypervisor(vm_type, settings())
        assert isinstance(hypervisor, LibvirtHypervisor) and hypervisor.vm_type == vm_type


def test_full_lifecycle(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    job = make_job(tmp_path)
    domain = hv.create(job)
    try:
        assert domain.name == job.name
        info = domain.info()
        assert info.state is DomainState.RUNNING
        assert info.memory_kib == 64 * 1024 and info.max_memory_kib == 64 * 1024
        assert info.vcpus == 1 and info.cpu_time_ns > 0

        domain.pause()
        assert domain.info().state is DomainState.PAUSED
        domain.pause()  # idempotent
        domain.unpause()
        assert domain.info().state is DomainState.RUNNING
        domain.unpause()  # idempotent

        state = domain.save(tmp_path, "")
        save_file = tmp_path / state.files[0]
        assert save_file.name == "xen.mem.ckpt" and save_file.stat().st_size > 0
        assert domain.info().state is DomainState.GONE  # transient: libvirt forgot it
        assert hv.lookup(job.name) is None

        restored = hv.restore(job, state)
        assert restored.name == job.name
        assert restored.info().state is DomainState.RUNNING

        restored.shutdown(grace_seconds=2)
        assert restored.info().state is DomainState.GONE
    finally:
        hv.destroy_by_name(job.name)


def test_created_domain_is_transient_with_builtin_xml(hv: LibvirtHypervisor, raw_conn, tmp_path: Path) -> None:
    job = make_job(tmp_path, vcpus=2, networking_type="nat", mac="52:54:00:aa:bb:cc")
    hv.create(job)
    try:
        dom = raw_conn.lookupByName(job.name)
        assert not dom.isPersistent()
        root = domain_xml_of(raw_conn, job.name)
        assert root.get("type") == "qemu"  # Settings.kvm_domain_type
        assert root.findtext("vcpu") == "2"
        assert root.find("devices/interface/mac").get("address") == "52:54:00:aa:bb:cc"
    finally:
        hv.destroy_by_name(job.name)


def test_save_of_paused_domain_restores_running(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    job = make_job(tmp_path)
    domain = hv.create(job)
    try:
        domain.pause()
        state = domain.save(tmp_path, "")
        assert hv.restore(job, state).info().state is DomainState.RUNNING
    finally:
        hv.destroy_by_name(job.name)


def test_restore_with_moved_disks_falls_back_when_driver_refuses_xml(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    """The test driver refuses a replacement XML (VIR_ERR_ARGUMENT_UNSUPPORTED);
    the restore then goes on with the image's own XML."""
    job = make_job(tmp_path)
    state = hv.create(job).save(tmp_path, "")
    moved = job.model_copy(update={"disks": (Disk(path="/elsewhere/disk.img", device="vda", permission="w"),)})
    try:
        assert hv.restore(moved, state).info().state is DomainState.RUNNING
    finally:
        hv.destroy_by_name(job.name)


def test_restore_of_garbage_file_fails(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    bad = tmp_path / "garbage"
    bad.write_bytes(b"not a save image")
    with pytest.raises(JobImageError) as info:  # the saved state cannot be restored: the job's
        hv.restore(make_job(tmp_path), SavedState((bad.name,)))
    assert str(bad) in info.value.message


def test_restore_whose_error_text_is_not_utf8_is_the_jobs(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    """libvirt quotes the image's bytes in its XML error; libvirt-python cannot
    decode them and raises SystemError from the call (and UnicodeDecodeError
    from libvirtError()). The test driver's save format: magic, length, XML."""
    xml = b"<domain type='test'><name>x\xff\x83y</name></domain>"
    bad = tmp_path / "damaged"
    bad.write_bytes(b"TestGuestMagic\0" + len(xml).to_bytes(4, sys.byteorder) + xml)
    with pytest.raises(JobImageError, match="not proper UTF-8") as info:
        hv.restore(make_job(tmp_path), SavedState((bad.name,)))
    assert "\ufffd" in info.value.message


def test_missing_domain(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    name = f"missing_{uuid.uuid4().hex[:8]}"
    assert hv.lookup(name) is None
    assert hv.destroy_by_name(name) is False
    # A handle whose domain went away: reads say GONE, ending it is not an error.
    job = make_job(tmp_path)
    domain = hv.create(job)
    domain.destroy()
    assert domain.info().state is DomainState.GONE
    domain.destroy()
    domain.shutdown(grace_seconds=1)
    with pytest.raises(HypervisorError) as info:
        domain.pause()
    assert info.value.code == libvirt.VIR_ERR_NO_DOMAIN
    with pytest.raises(HypervisorError):
        domain.save(tmp_path, ".never")


def test_destroy_by_name_destroys(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    job = make_job(tmp_path)
    domain = hv.create(job)
    assert hv.destroy_by_name(job.name) is True
    assert domain.info().state is DomainState.GONE


def test_shutdown_of_paused_domain(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    job = make_job(tmp_path)
    domain = hv.create(job)
    try:
        domain.pause()
        domain.shutdown(grace_seconds=1)
        assert domain.info().state is DomainState.GONE
    finally:
        hv.destroy_by_name(job.name)


def test_shutdown_destroys_after_grace(hv: LibvirtHypervisor, tmp_path: Path, monkeypatch) -> None:
    """A guest that ignores the ACPI request is destroyed when the grace ends."""
    job = make_job(tmp_path)
    domain = hv.create(job)
    real = hv.connection.get()

    class DeafDomain:
        def __init__(self, dom: libvirt.virDomain) -> None:
            self._dom = dom

        def shutdown(self) -> int:
            return 0  # accepted, and ignored by the guest

        def __getattr__(self, name: str) -> Any:
            return getattr(self._dom, name)

    deaf = FaultyConn(real, lookupByName=lambda n: DeafDomain(real.lookupByName(n)))
    monkeypatch.setattr(hv.connection, "get", lambda: deaf)
    try:
        began = time.monotonic()
        domain.shutdown(grace_seconds=0.6)
        elapsed = time.monotonic() - began
        assert 0.5 <= elapsed < 3
        assert domain.info().state is DomainState.GONE
    finally:
        monkeypatch.undo()
        hv.destroy_by_name(job.name)


def test_shutdown_presses_again_until_the_guest_listens(hv: LibvirtHypervisor, tmp_path: Path, monkeypatch) -> None:
    """A guest that is still booting misses the first press; a later one reaches it."""
    from vmgahp.drivers.libvirt import domain as domain_module

    job = make_job(tmp_path)
    domain = hv.create(job)
    real = hv.connection.get()
    presses: list[float] = []

    class BootingDomain:
        def __init__(self, dom: libvirt.virDomain) -> None:
            self._dom = dom

        def shutdown(self) -> int:
            presses.append(time.monotonic())
            return 0 if len(presses) < 3 else self._dom.shutdown()  # listens from the third press on

        def __getattr__(self, name: str) -> Any:
            return getattr(self._dom, name)

    booting = FaultyConn(real, lookupByName=lambda n: BootingDomain(real.lookupByName(n)))
    monkeypatch.setattr(hv.connection, "get", lambda: booting)
    monkeypatch.setattr(domain_module, "PRESS_REPEAT_SECONDS", 0.3)
    try:
        began = time.monotonic()
        domain.shutdown(grace_seconds=30)
        assert time.monotonic() - began < 5, "destroyed after the grace instead of powered off"
        assert len(presses) == 3
        assert presses[1] - presses[0] >= 0.25 and presses[2] - presses[1] >= 0.25
    finally:
        monkeypatch.undo()
        hv.destroy_by_name(job.name)
    assert domain.info().state is DomainState.GONE


# ------------------------------------------------------------ start errors
def test_existing_name_is_left_alone(hv: LibvirtHypervisor, raw_conn, tmp_path: Path) -> None:
    job = make_job(tmp_path)
    hv.create(job)
    try:
        with pytest.raises(HostError) as info:
            hv.create(job)
        assert token_for("CONDOR_VM_START", info.value) == tokens.INTERNAL
        assert "already exists" in info.value.message and job.name in info.value.message
        assert raw_conn.lookupByName(job.name).state()[0] == libvirt.VIR_DOMAIN_RUNNING
    finally:
        hv.destroy_by_name(job.name)


Q, ST = libvirt.VIR_FROM_QEMU, libvirt.VIR_FROM_STORAGE
QEMU_DIED = "internal error: qemu unexpectedly closed the monitor: "


@pytest.mark.parametrize(
    ("code", "source", "message", "image", "origin", "token"),
    [
        # QEMU cannot open the job's image as its declared format: the job's fault.
        (libvirt.VIR_ERR_INTERNAL_ERROR, Q, QEMU_DIED + "Image is not in qcow2 format", "raw", "builtin", "BAD"),
        (libvirt.VIR_ERR_INTERNAL_ERROR, Q, QEMU_DIED + "something qemu says", "raw-as-qcow2", "builtin", "BAD"),
        (libvirt.VIR_ERR_SYSTEM_ERROR, ST, "Cannot access storage file: No such file", "missing", "builtin", "BAD"),
        # The image opens fine: the failure is the host's (permission to QEMU, a lock, memory).
        (libvirt.VIR_ERR_INTERNAL_ERROR, Q, QEMU_DIED + "Could not open '{disk}': Permission denied", "raw", "builtin",
         "INTERNAL"),
        (libvirt.VIR_ERR_INTERNAL_ERROR, Q, QEMU_DIED + 'Failed to get "write" lock', "raw", "builtin", "INTERNAL"),
        (libvirt.VIR_ERR_INTERNAL_ERROR, Q, QEMU_DIED + "cannot set up guest memory: Cannot allocate memory", "raw",
         "builtin", "INTERNAL"),
        (libvirt.VIR_ERR_SYSTEM_ERROR, ST, "Cannot access storage file (as uid:64055): Permission denied", "raw",
         "builtin", "INTERNAL"),
        (libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_FROM_QEMU, "unsupported configuration: Domain requires KVM",
         "raw", "builtin", "INTERNAL"),
        (libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_FROM_QEMU, "operation failed: ...", "raw", "builtin",
         "INTERNAL"),
        (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_FROM_REMOTE, "no connection driver", "raw", "builtin", "INTERNAL"),
        # The description: the job's values made the built-in XML invalid; a script's XML is the admin's.
        (libvirt.VIR_ERR_XML_INVALID_SCHEMA, libvirt.VIR_FROM_XML, "XML document failed to validate", "raw", "builtin",
         "BAD"),
        (libvirt.VIR_ERR_XML_INVALID_SCHEMA, libvirt.VIR_FROM_XML, "XML document failed to validate", "raw", "script",
         "INTERNAL"),
        (libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_FROM_DOMAIN, "XML error: bad MAC address", "raw", "builtin", "BAD"),
    ],
)
def test_whose_fault_a_start_failure_is(tmp_path: Path, code, source, message, image, origin, token) -> None:
    """By libvirt's error code, then by whether qemu-img can open the job's images (docs/admin.md)."""
    path = tmp_path / "disk.img"
    if image != "missing":
        path.write_bytes(b"\0" * 65536)  # a raw image
    fmt = "qcow2" if image == "raw-as-qcow2" else "raw"
    job = make_job(tmp_path, disks=(Disk(path=str(path), device="vda", permission="w", format=fmt),))
    assert job_at_fault(code, source, message.format(disk=path), job, origin) is (token == "BAD")


@pytest.mark.parametrize(
    ("message", "token"),
    [
        ("internal error: process exited while connecting to monitor: Image is not in qcow2 format", tokens.BAD_IMAGE),
        ("internal error: process exited while connecting to monitor: out of memory", tokens.INTERNAL),
    ],
)
def test_start_failure_tokens(hv: LibvirtHypervisor, tmp_path: Path, monkeypatch, message: str, token: str) -> None:
    job = make_job(tmp_path)
    (tmp_path / "disk.img").write_bytes(b"\0" * 65536)
    text = message.format(disk=job.disks[0].path)
    real = hv.connection.get()

    def refuse(xml: str, flags: int = 0) -> None:
        raise libvirt_error(text, libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_QEMU)

    monkeypatch.setattr(hv.connection, "get", lambda: FaultyConn(real, createXML=refuse))
    with pytest.raises(HypervisorError) as info:
        hv.create(job)
    assert token_for("CONDOR_VM_START", info.value) == token
    assert info.value.message == text


def test_real_libvirt_refusal_is_internal(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    """Well-formed XML that libvirt rejects (no <memory>) from a script."""
    script = write_script(tmp_path / "nomem.sh", """\
        cat >/dev/null
        echo "<domain type='qemu'><name>x</name><os><type>hvm</type></os></domain>"
        """)
    hypervisor = LibvirtHypervisor(settings(xml_script=str(script)), "kvm")
    with pytest.raises(HostError) as info:
        hypervisor.create(make_job(tmp_path))
    assert token_for("CONDOR_VM_START", info.value) == tokens.INTERNAL
    assert "memory" in info.value.message.lower()


def test_start_validate_flag_refused_falls_back(hv: LibvirtHypervisor, tmp_path: Path, monkeypatch) -> None:
    real = hv.connection.get()
    seen: list[int] = []

    def create_xml(xml: str, flags: int = 0) -> libvirt.virDomain:
        seen.append(flags)
        if flags & libvirt.VIR_DOMAIN_START_VALIDATE:
            raise libvirt_error("unsupported flags (0x10) in function x", libvirt.VIR_ERR_INVALID_ARG)
        return real.createXML(xml, flags)

    monkeypatch.setattr(hv.connection, "get", lambda: FaultyConn(real, createXML=create_xml))
    jobs = [make_job(tmp_path), make_job(tmp_path)]
    try:
        for job in jobs:
            hv.create(job)
        # Asked once, then remembered.
        assert seen == [libvirt.VIR_DOMAIN_START_VALIDATE, 0, 0]
    finally:
        monkeypatch.undo()
        for job in jobs:
            hv.destroy_by_name(job.name)


def test_builtin_xml_failure_is_critical(tmp_path: Path) -> None:
    hypervisor = LibvirtHypervisor(settings(), "xen")
    job = make_job(tmp_path, vm_type="xen", extras=XenBoot(kernel="included"))  # no bootloader anywhere
    with pytest.raises(GahpError) as info:
        hypervisor.create(job)
    assert info.value.token == tokens.CRITICAL


# -------------------------------------------------------------- XML script
def test_xml_script_output_is_used(tmp_path: Path, raw_conn) -> None:
    stdin_copy = tmp_path / "stdin.txt"
    argv_copy = tmp_path / "argv.txt"
    script = write_script(tmp_path / "make-xml.sh", f"""\
        printf '%s|' "$#" "$@" > {argv_copy}
        cat > {stdin_copy}
        echo "<domain type='kvm'>"
        echo "  <name>whatever-the-script-says</name>"
        echo "  <description>from the script</description>"
        echo "  <memory unit='MiB'>32</memory>"
        echo "  <os><type>hvm</type></os>"
        echo "</domain>"
        """)
    # V2 syntax: double-quoted, single quotes group words (HTCondor's ArgList).
    cfg = settings(xml_script=str(script), xml_script_args="\"'/tmp/debug log' -v\"", bridge_interface="br7")
    hypervisor = LibvirtHypervisor(cfg, "kvm")
    job = make_job(tmp_path, networking_type="nat")
    hypervisor.create(job)
    try:
        root = domain_xml_of(raw_conn, job.name)  # the gahp's name, not the script's
        assert root.findtext("description") == "from the script"
        assert root.get("type") == "qemu"  # rewritten to VM_KVM_DOMAIN_TYPE
        assert argv_copy.read_text() == "2|/tmp/debug log|-v|"
        fed = stdin_copy.read_text()
        assert fed == script_input(job, hypervisor.libvirt, cfg.bridge_interface)
        # The job's ad, with the disk list naming the disks as prepared.
        disk = job.disks[0]
        assert fed.startswith('JobVMType = "kvm"\nJobVMMemory = 64\n'
                              f'VMPARAM_vm_Disk = "{disk.path}:vda:w:raw"\n')
        assert 'VMPARAM_Xen_Bootloader = ""\n' in fed
        assert 'VMPARAM_Xen_Initrd = ""\n' in fed
        assert 'VMPARAM_Bridge_Interface = "br7"\n' in fed
        assert 'JobVMNetworkingType = "nat"\n' in fed
        assert fed.endswith("\n\n")
    finally:
        hypervisor.destroy_by_name(job.name)


def test_script_input_skips_attributes_the_ad_has(tmp_path: Path) -> None:
    job = make_job(tmp_path, ad_text='JobVMNetworkingType = "bridge"\nVMPARAM_Xen_Initrd = "/i"\n')
    fed = script_input(job, LibvirtHypervisor(settings(), "kvm").libvirt)
    assert fed.count("JobVMNetworkingType") == 1 and fed.count("VMPARAM_Xen_Initrd") == 1
    assert "VMPARAM_Bridge_Interface" not in fed


@pytest.mark.parametrize(
    "body",
    [
        "cat >/dev/null\necho '<domain type=\"kvm\"><name>x</name></domain>'\nexit 1\n",  # non-zero exit
        "cat >/dev/null\necho 'this is <not> xml'\n",  # garbage
        "cat >/dev/null\necho '<network><name>x</name></network>'\n",  # XML, but not a domain
        "cat >/dev/null\n",  # nothing at all
        "exit 0\n",  # does not even read its input
    ],
    ids=["exit-1", "garbage", "not-a-domain", "empty", "ignores-stdin"],
)
def test_failing_script_falls_back_to_builtin_xml(tmp_path: Path, raw_conn, body: str) -> None:
    script = write_script(tmp_path / "bad.sh", body)
    hypervisor = LibvirtHypervisor(settings(xml_script=str(script)), "kvm")
    job = make_job(tmp_path)
    hypervisor.create(job)
    try:
        root = domain_xml_of(raw_conn, job.name)
        assert root.findtext("on_crash") == "destroy"  # the built-in shape
        assert root.find("features/acpi") is not None
    finally:
        hypervisor.destroy_by_name(job.name)


def test_missing_or_unexecutable_script_falls_back(tmp_path: Path) -> None:
    not_executable = tmp_path / "plain.sh"
    not_executable.write_text("#!/bin/sh\necho '<domain/>'\n")
    for script in (tmp_path / "no-such-script", not_executable):
        hypervisor = LibvirtHypervisor(settings(xml_script=str(script)), "kvm")
        xml, origin = hypervisor.domain_xml(make_job(tmp_path))
        assert origin == "builtin" and xml.startswith("<domain")


def test_slow_script_is_killed_and_falls_back(tmp_path: Path) -> None:
    marker = tmp_path / "child-survived"
    script = write_script(tmp_path / "slow.sh", f"""\
        (sleep 5; touch {marker}) &
        sleep 30
        """)
    hypervisor = LibvirtHypervisor(settings(xml_script=str(script), call_timeout=0.5), "kvm")
    began = time.monotonic()
    xml, origin = hypervisor.domain_xml(make_job(tmp_path))
    assert origin == "builtin"
    assert time.monotonic() - began < 4
    time.sleep(0.1)
    # The whole process group went, including the backgrounded helper.
    assert not any(
        "slow.sh" in _cmdline(pid) or f"touch {marker}" in _cmdline(pid) for pid in _pids()
    )


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_xen_script_keeps_its_domain_type(tmp_path: Path) -> None:
    script = write_script(tmp_path / "xen.sh", """\
        cat >/dev/null
        echo "<domain type='xen'><name>n</name><memory>65536</memory><os><type>linux</type></os></domain>"
        """)
    boot = tmp_path / "pygrub"
    boot.write_text("")
    hypervisor = LibvirtHypervisor(settings(xml_script=str(script), xen_bootloader=str(boot)), "xen")
    job = make_job(tmp_path, vm_type="xen", extras=XenBoot(kernel="included", bootloader=str(boot)))
    xml, origin = hypervisor.domain_xml(job)
    assert origin == "script"
    root = ET.fromstring(xml)
    assert root.get("type") == "xen" and root.findtext("name") == job.name


# ------------------------------------------------------------- host checks
def test_check_host_test_uri(tmp_path: Path, monkeypatch) -> None:
    # No /dev/kvm check for a test:/// URI, even with domain type kvm.
    monkeypatch.setattr(driver_module, "KVM_DEVICE", str(tmp_path / "no-kvm"))
    LibvirtHypervisor(settings(kvm_domain_type="kvm"), "kvm").check_host()


def test_check_host_dead_uri() -> None:
    hypervisor = LibvirtHypervisor(settings(kvm_uri="qemu+unix:///system?socket=/nonexistent"), "kvm")
    with pytest.raises(HostCheckError) as info:
        hypervisor.check_host()
    assert "qemu+unix:///system?socket=/nonexistent" in str(info.value)


def test_check_host_needs_kvm_device_for_kvm_type(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(driver_module, "KVM_DEVICE", str(tmp_path / "no-kvm"))
    cfg = settings(kvm_uri="qemu:///system", kvm_domain_type="kvm")
    with pytest.raises(HostCheckError) as info:
        LibvirtHypervisor(cfg, "kvm").check_host()
    assert "no-kvm" in str(info.value) and "VM_KVM_DOMAIN_TYPE" in str(info.value)
    # With software emulation the device does not matter (the URI is dead here).
    dead = settings(kvm_uri="qemu+unix:///system?socket=/nonexistent", kvm_domain_type="qemu")
    with pytest.raises(HostCheckError) as info:
        LibvirtHypervisor(dead, "kvm").check_host()
    assert "no-kvm" not in str(info.value)


def test_check_host_xen_bootloader(tmp_path: Path) -> None:
    with pytest.raises(HostCheckError, match="XEN_BOOTLOADER is not set"):
        LibvirtHypervisor(settings(), "xen").check_host()
    with pytest.raises(HostCheckError, match="not readable"):
        LibvirtHypervisor(settings(xen_bootloader=str(tmp_path / "missing")), "xen").check_host()
    boot = tmp_path / "pygrub"
    boot.write_text("")
    LibvirtHypervisor(settings(xen_bootloader=str(boot)), "xen").check_host()


def test_unknown_vm_type_is_refused() -> None:
    with pytest.raises(ValueError):
        LibvirtHypervisor(settings(), "vmware")


# -------------------------------------------------------------- networking
def _fake_passt(tmp_path: Path, monkeypatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    write_script(bindir / "passt", "exit 0\n")
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '')}")


def test_network_plan_user_works_without_passt(tmp_path: Path, monkeypatch) -> None:
    """Without passt, QEMU's user-mode stack still gives kvm jobs ``user``; passt only picks the backend."""
    cfg = settings(networking=True, networking_types=("nat", "bridge", "user"), bridge_interface="br0")
    monkeypatch.setenv("PATH", str(tmp_path))  # no passt here
    kvm = LibvirtHypervisor(cfg, "kvm")
    plan = kvm.network_plan()
    assert plan.types == ("nat", "bridge", "user") and plan.default == "user"
    assert kvm.network_plan() is plan  # cached
    assert not kvm.passt_available()
    assert LibvirtHypervisor(cfg, "xen").network_plan().types == ("nat", "bridge")  # never user for Xen

    _fake_passt(tmp_path, monkeypatch)
    assert LibvirtHypervisor(cfg, "kvm").passt_available()
    xen_plan = LibvirtHypervisor(cfg, "xen").network_plan()
    assert "user" not in xen_plan.types


def test_user_nic_gets_passt_backend_only_with_passt(tmp_path: Path, monkeypatch) -> None:
    job = make_job(tmp_path, networking_type="user")
    monkeypatch.setenv("PATH", str(tmp_path))
    xml, _ = LibvirtHypervisor(settings(), "kvm").domain_xml(job)
    assert ET.fromstring(xml).find("devices/interface/backend") is None
    _fake_passt(tmp_path, monkeypatch)
    xml, _ = LibvirtHypervisor(settings(), "kvm").domain_xml(job)
    assert ET.fromstring(xml).find("devices/interface/backend").get("type") == "passt"


# -------------------------------------------------------------- connection
def test_connection_is_shared_and_lazy(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    assert hv.connection._conn is None  # nothing opened by the constructor
    first = hv.connection.get()
    assert hv.connection.get() is first


def test_reconnects_after_the_connection_died(hv: LibvirtHypervisor, raw_conn, tmp_path: Path) -> None:
    # raw_conn keeps test:///default's state alive: the test driver drops its
    # domains when the last connection of the process closes.
    job = make_job(tmp_path)
    domain = hv.create(job)
    try:
        old = hv.connection.get()
        old.close()  # isAlive() now fails: "invalid connection pointer"
        assert domain.info().state is DomainState.RUNNING
        assert hv.connection.get() is not old
    finally:
        hv.destroy_by_name(job.name)


def test_transport_error_is_retried_on_a_new_connection(hv: LibvirtHypervisor, tmp_path: Path, monkeypatch) -> None:
    job = make_job(tmp_path)
    domain = hv.create(job)
    real = hv.connection.get()
    calls = {"n": 0}

    def broken_lookup(name: str) -> libvirt.virDomain:
        calls["n"] += 1
        raise libvirt_error("Cannot write data: Broken pipe", libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC)

    faulty = FaultyConn(real, lookupByName=broken_lookup, isAlive=lambda: 1)
    hv.connection._conn = faulty  # type: ignore[assignment]  # the connection breaks under us
    try:
        assert domain.info().state is DomainState.RUNNING
        assert calls["n"] == 1
        assert hv.connection.get() is not faulty
    finally:
        hv.destroy_by_name(job.name)


def test_libvirt_errors_are_not_printed(hv: LibvirtHypervisor, capfd) -> None:
    hv.lookup(f"missing_{uuid.uuid4().hex[:8]}")
    assert "libvirt:" not in capfd.readouterr().err


STOCK_LIKE_SCRIPT = TESTS / "xml_scripts" / "simple_libvirt_xml.py"


def test_stock_like_script_gets_the_prepared_disks(raw_conn: libvirt.virConnect, tmp_path: Path) -> None:
    """A script that follows the stock script's contract builds its disks from
    VMPARAM_vm_Disk: it must receive the files the VM really opens (the overlay,
    the CD-ROM image), and under software emulation its host-passthrough CPU goes."""
    overlay = tmp_path / "vmgahp-overlay-vda.qcow2"
    iso = tmp_path / "vmgahp-cdrom.iso"
    job = make_job(tmp_path, disks=(
        Disk(path=str(overlay), device="vda", permission="w", format="qcow2"),
        Disk(path=str(iso), device="hdc", permission="r", format="raw"),
    ), ad_text='JobVMMemory = 64\nJobVMType = "kvm"\nVMPARAM_VM_NAME = "x"\n'
              f'VMPARAM_vm_Disk = "disk.img:vda:w:raw"\nVM_WORKING_DIR = "{tmp_path}"\n')
    hypervisor = LibvirtHypervisor(settings(xml_script=str(STOCK_LIKE_SCRIPT)), "kvm")
    xml, origin = hypervisor.domain_xml(job)
    assert origin == "script"
    root = ET.fromstring(xml)
    disks = {d.find("target").get("dev"): d for d in root.findall("devices/disk")}
    assert disks["vda"].find("source").get("file") == str(overlay)
    assert disks["vda"].find("driver").get("type") == "qcow2"
    assert disks["hdc"].get("device") == "cdrom" and disks["hdc"].find("readonly") is not None
    assert root.find("cpu") is None and root.get("type") == "qemu"
