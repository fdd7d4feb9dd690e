"""The talk "Virtual Machines in Condor": every host knob, machine-ad attribute and
behaviour the gahp or ``vmgahp run`` owns, one test each, run for real.

The submit commands are in ``tests/seed/test_seed_submit.py``; the cheap real
things both files run (the probe as the startd runs it, ``vmgahp run`` on
libvirt's test hypervisor) are in ``tests/seed_harness.py``. The behaviour
items that need a guest that really boots, writes and powers off are marked
``libvirtd`` and run the tiny guest once (``hello``, module scope).

What the startd or the starter own is said where it matters, with the
HTCondor source that says so: the gahp only has to feed them the right
lines and act on the right requests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from test_transcripts import SUPPORT_VMS

import seed_harness as h
import transcript_runner as tr
from guest_fixture import read_guest_file
from helpers import TESTS, TOP

HERE = TESTS
OWN = HERE / "transcripts" / "vmgahp"
BOOTLOADER_KNOBS = {"XEN_BOOTLOADER": "/bin/true"}  # any readable file (spec 1.7 step 7)

KVM_JOB = """\
universe   = vm
vm_type    = kvm
executable = seed
vm_memory  = 128
vm_disk    = disk.img:vda:w:raw
transfer_input_files = disk.img
{extra}
queue
"""


@pytest.fixture
def base() -> Iterator[Path]:
    """Under /tmp, world-searchable: the job user (uid 1000 under root) must reach it."""
    path = Path(tempfile.mkdtemp(prefix="vmgahp-seed-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def replay(name: str) -> None:
    """One of vmgahp's own transcripts against the real daemon (test hypervisor)."""
    options = tr.Options(cmd=tr.default_cmd(), substitutions=dict(SUPPORT_VMS))  # vmware where pyVmomi is
    result = tr.run_file(OWN / name, options)
    assert result.passed, result.report()


def kvm(extra: str = "") -> str:
    return KVM_JOB.format(extra=extra)


# ====================================================== host configuration
def test_vm_type_enables_vm_capability(base: Path) -> None:
    """The startd runs ``-M 0 vmtype $(VM_TYPE)`` and turns VM universe on only when it
    answers (vmuniverse_mgr.cpp:245-252, 366-558): kvm and xen answer, anything else
    does not. (vmware is the VMware driver's: tests/vmware.)"""
    for vm_type, knobs in (("kvm", {}), ("xen", BOOTLOADER_KNOBS)):
        got = h.probe(base, vm_type, **knobs)
        assert got.code == 0 and got.ad["VM_Type"] == vm_type, got.lines
    refused = h.probe(base, "hyperv")
    assert refused.code != 0 and refused.lines == []


def test_vm_memory_is_the_maximum_for_all_vms(base: Path) -> None:
    """VM_MEMORY is published as VM_Memory; the startd subtracts what its running VMs
    use (vmuniverse_mgr.cpp:320-327, 563) and condor_submit requires
    ``TARGET.VM_Memory >= MY.JobVMMemory`` (submit_utils.cpp:6177). The gahp refuses
    one VM bigger than VM_MEMORY itself."""
    assert h.probe(base, VM_MEMORY=512).ad["VM_Memory"] == 512
    run = h.run_job(base, kvm().replace("vm_memory  = 128", "vm_memory  = 600"), knobs={"VM_MEMORY": 512})
    assert run.code == 4, run.out + run.conversation  # requeued: the starter blames the machine
    assert "VMGAHP_ERR_JOBCLASSAD_TOO_MUCH_MEMORY_REQUEST" in run.conversation
    ok = h.run_job(base, kvm().replace("vm_memory  = 128", "vm_memory  = 512"), name="fits",
                   knobs={"VM_MEMORY": 512})
    assert ok.code == 124 and ok.xml.findtext("memory") == str(512 * 1024)


def test_vm_max_number_is_left_to_the_startd(base: Path) -> None:
    """VM_MAX_NUMBER is the startd's (VM_AvailNum, vmuniverse_mgr.cpp:270, 308-314):
    the gahp accepts it and publishes nothing of it."""
    got = h.probe(base, VM_MAX_NUMBER=2)
    assert got.code == 0 and got.lines == h.probe(base).lines
    assert "VM_AvailNum" not in got.ad and "VM_MAX_NUMBER" not in got.ad


def test_vm_networking(base: Path) -> None:
    """Off: the probe says FALSE and a networked job is refused; on: the job gets a NIC."""
    assert h.probe(base).ad["VM_Networking"] is False
    refused = h.run_job(base, kvm("vm_networking = true"), knobs={"VM_NETWORKING": False})
    assert refused.code == 4 and "VMGAHP_ERR_JOBCLASSAD_MISMATCHED_NETWORKING" in refused.conversation
    on = {"VM_NETWORKING": True, "VM_NETWORKING_TYPE": "nat"}
    assert h.probe(base, **on).ad["VM_Networking"] is True
    run = h.run_job(base, kvm("vm_networking = true"), name="on", knobs=on)
    assert run.xml.find("devices/interface").get("type") == "network"


def test_vm_networking_type_nat_bridge_with_spaces(base: Path) -> None:
    """``VM_NETWORKING_TYPE = nat, bridge`` (a blank after the comma, as in the talk)."""
    knobs = {"VM_NETWORKING": True, "VM_NETWORKING_TYPE": "nat, bridge", "VM_NETWORKING_BRIDGE_INTERFACE": "br0"}
    assert h.probe(base, **knobs).ad["VM_Networking_Types"] == "nat,bridge"
    run = h.run_job(base, kvm("vm_networking = true\nvm_networking_type = bridge"), knobs=knobs)
    iface = run.xml.find("devices/interface")
    assert iface.get("type") == "bridge" and iface.find("source").get("bridge") == "br0"


def test_vm_networking_default_type(base: Path) -> None:
    """A job that asks for a network but no type gets VM_NETWORKING_DEFAULT_TYPE
    (condor_submit leaves JobVMNetworkingType out; vm_type.cpp:145-156 in the C++)."""
    knobs = {"VM_NETWORKING": True, "VM_NETWORKING_TYPE": "nat, bridge", "VM_NETWORKING_BRIDGE_INTERFACE": "br0",
             "VM_NETWORKING_DEFAULT_TYPE": "bridge"}
    run = h.run_job(base, kvm("vm_networking = true"), knobs=knobs)
    assert "JobVMNetworkingType" not in run.ad
    assert run.xml.find("devices/interface").get("type") == "bridge"
    knobs["VM_NETWORKING_DEFAULT_TYPE"] = "nat"
    run = h.run_job(base, kvm("vm_networking = true"), name="nat", knobs=knobs)
    assert run.xml.find("devices/interface").get("type") == "network"


def test_vm_soft_suspend_suspends_in_memory() -> None:
    """VM_SOFT_SUSPEND is read by the starter (vm_proc.cpp:98), which then sends
    CONDOR_VM_SOFT_SUSPEND: the gahp pauses the domain in memory (Running, no state
    file) instead of saving it to disk (Suspended). Both, on the real daemon."""
    replay("38_starter_soft_suspend.txt")
    replay("39_starter_hard_suspend_status.txt")


def test_vmware_local_settings_file(base: Path) -> None:
    """The VMware driver's (drivers/vmware): the ``key = "value"`` lines between the C++
    markers become the VM's extra configuration. Read here from the configured knob
    through the loaded driver; end to end on vCenter's simulator in
    tests/vmware/test_vmware_gahp.py (marked vcsim)."""
    from helpers import settings
    from vmgahp.drivers import registry

    local = base / "local-settings"
    local.write_text('outside = "no"\n### Start local parameters ###\nisolation.tools.copy.disable = "TRUE"\n'
                     '# a comment\n### End local parameters ###\nafter = "no"\n')
    hypervisor = registry.load_hypervisor("vmware", settings("vmware", VMWARE_LOCAL_SETTINGS_FILE=str(local)))
    assert hypervisor._extra_config() == {"isolation.tools.copy.disable": "TRUE"}


def test_libvirt_xml_script(base: Path) -> None:
    """LIBVIRT_XML_SCRIPT makes the domain XML from the job ad on stdin; without a
    working script the gahp falls back to its own XML (and says so)."""
    script = HERE / "xml_scripts" / "simple_libvirt_xml.py"
    run = h.run_job(base, kvm(), knobs={"LIBVIRT_XML_SCRIPT": script})
    started = run.event("domain_xml")
    assert run.code == 124 and started["origin"] == "script"
    # the script's marks: PAE always, a crash restarts (the built-in XML destroys)
    assert run.xml.find("features/pae") is not None and run.xml.findtext("on_crash") == "restart"
    missing = h.run_job(base, kvm(), name="missing", knobs={"LIBVIRT_XML_SCRIPT": base / "no-such-script"})
    assert missing.event("domain_xml")["origin"] == "builtin" and missing.event("xml_script_failed")


XEN_JOB = """\
universe   = vm
vm_type    = xen
executable = seed
vm_memory  = 128
vm_disk    = xen.img:xvda:w
xen_kernel = included
transfer_input_files = xen.img
vm_networking = true
vm_networking_type = bridge
queue
"""


def test_vm_bridge_script(base: Path) -> None:
    """Xen: ``VM_BRIDGE_SCRIPT = vif-bridge bridge=xenbr0`` puts the script and the
    bridge on the bridged NIC. KVM: ignored, and the log says so."""
    knobs = {**BOOTLOADER_KNOBS, "VM_NETWORKING": True, "VM_NETWORKING_TYPE": "nat, bridge",
             "VM_BRIDGE_SCRIPT": "vif-bridge bridge=xenbr0"}
    assert h.probe(base, "xen", **knobs).ad["VM_Networking_Types"] == "nat,bridge"
    run = h.run_job(base, XEN_JOB, {"xen.img": 8 << 20}, knobs=knobs)
    assert run.code == 124, run.out + run.conversation
    iface = run.xml.find("devices/interface")
    assert iface.find("script").get("path") == "vif-bridge" and iface.find("source").get("bridge") == "xenbr0"
    on_kvm = h.run_job(base, kvm(), name="kvm", knobs={"VM_BRIDGE_SCRIPT": "vif-bridge bridge=xenbr0"})
    ignored = on_kvm.event("bridge_script_ignored")
    assert ignored and ignored["knob"] == "VM_BRIDGE_SCRIPT"
    assert on_kvm.xml.find(".//script") is None


def test_xen_bootloader(base: Path) -> None:
    """``xen_kernel = included`` boots through XEN_BOOTLOADER; without a readable
    one a Xen gahp does not start (so the startd turns VM universe off)."""
    run = h.run_job(base, XEN_JOB.replace("vm_networking = true\nvm_networking_type = bridge\n", ""),
                    {"xen.img": 8 << 20}, knobs=BOOTLOADER_KNOBS)
    assert run.xml.get("type") == "xen" and run.xml.findtext("bootloader") == "/bin/true"
    assert h.probe(base, "xen").code != 0
    assert h.probe(base, "xen", XEN_BOOTLOADER=base / "missing").code != 0


# ================================================ the machine ad the probe feeds
def test_machine_ad_from_the_probe(base: Path) -> None:
    """VM_GAHP_VERSION, VM_Type, VM_Memory, VM_Networking and VM_Networking_Types
    (the ``"nat,bridge"`` form), parsed as the startd parses them; VM_HardwareVT
    only when VM_HARDWARE_VT is on."""
    got = h.probe(base, VM_MEMORY=768, VM_NETWORKING=True, VM_NETWORKING_TYPE="nat, bridge",
                  VM_NETWORKING_BRIDGE_INTERFACE="br0")
    assert got.code == 0
    assert got.ad["VM_GAHP_VERSION"] == "0.0.1"  # what the starter and startd expect (spec 5.4)
    assert got.ad["VM_Type"] == "kvm"
    assert got.ad["VM_Memory"] == 768
    assert got.ad["VM_Networking"] is True
    assert got.ad["VM_Networking_Types"] == "nat,bridge"
    assert "VM_HardwareVT" not in got.ad


def test_has_vm_and_vm_availnum_are_the_startds(base: Path) -> None:
    """HasVM and VM_AvailNum are added by the startd (vmuniverse_mgr.cpp:301-314), never
    by the gahp: a probe that printed them would be overwritten anyway."""
    got = h.probe(base, VM_MAX_NUMBER=3)
    assert got.code == 0 and {"HasVM", "VM_AvailNum"}.isdisjoint(set(got.ad.keys()))
    admin = (TOP / "docs" / "admin.md").read_text()
    assert "HasVM" in admin and "VM_AvailNum" in admin


# ================================================================ behaviour
def test_mac_address_kept_across_checkpoint_and_restart(base: Path) -> None:
    """A networked job vacated with a checkpoint and resumed keeps its MAC: libvirt's
    save image carries the domain, and the restored domain is checkpointed again with
    the same NIC. (The starter publishes it as VM_CkptMac, vm_proc.cpp:1450-1455.)"""
    submit = kvm("vm_networking = true\nvm_checkpoint = true\nvm_snapshot_disk = true\n"
                 "when_to_transfer_output = ON_EXIT_OR_EVICT")
    knobs = {"VM_NETWORKING": True, "VM_NETWORKING_TYPE": "nat"}
    first = h.run_job(base, submit, knobs=knobs)
    assert first.code == 124, first.out
    mac = checkpoint_mac(first.output / "checkpoint")
    assert mac.startswith("52:54:00:")  # libvirt's own, the job set none
    again = h.run_job(base, submit, name="again", knobs=knobs, sub=base / "job" / "job.sub",
                      args=("--resume", str(first.output / "checkpoint")))
    assert again.code == 124, again.out
    assert again.event("domain_restored") and not again.event("domain_started")
    assert checkpoint_mac(again.output / "checkpoint") == mac


def checkpoint_mac(checkpoint: Path) -> str:
    import json
    import xml.etree.ElementTree as ET

    manifest = json.loads((checkpoint / "vmgahp-checkpoint.json").read_text())
    return ET.fromstring(manifest["driver"]["domain_xml"]).find("devices/interface/mac").get("address")


@pytest.fixture(scope="module")
def hello(tiny_guest, libvirtd, tmp_path_factory) -> tuple[h.Run, Path]:
    return h.hello_run(tiny_guest, tmp_path_factory, "seed-hello")


@pytest.mark.libvirtd
def test_a_job_image_built_as_the_talk_says_runs_to_completion(hello) -> None:
    """examples/hello-vm: runs the application at boot, reads its input from the
    CD-ROM, shuts down when it exits; vmgahp run ends with the VM powered off (exit 0)."""
    run, _ = hello
    assert run.code == 0, run.out + run.conversation[-3000:]
    assert run.event("cdrom_built")
    assert "STATUS=Stopped" in run.conversation


@pytest.mark.libvirtd
def test_the_output_is_the_modified_vm_image(hello) -> None:
    """What comes back is the VM's whole disk, with what the guest wrote on it."""
    run, original = hello
    out = run.output / "boot.img"
    assert out.stat().st_size == original.stat().st_size
    assert read_guest_file(out, "answer.txt").strip() == "count=5 sum=100 min=4 max=42"
    assert read_guest_file(original, "answer.txt") is None


@pytest.mark.libvirtd
def test_a_snapshot_disk_returns_only_the_changes(tiny_guest, libvirtd, tmp_path_factory) -> None:
    """``+VMPARAM_vm_Snapshot_Disk = true``: the guest writes to a qcow2 overlay on the
    image, and only that overlay comes back - much smaller than the image, and the
    answer is in it (read through its backing file)."""
    run, original = h.hello_run(tiny_guest, tmp_path_factory, "seed-snap", "+VMPARAM_vm_Snapshot_Disk = true", 7302)
    assert run.code == 0, run.out + run.conversation[-3000:]
    back = sorted(p.name for p in run.output.iterdir())
    assert "boot.img" not in back, back
    overlay = run.output / "vmgahp-overlay-vda.qcow2"
    assert overlay.stat().st_size < original.stat().st_size // 4
    shutil.copy(original, run.output / "boot.img")  # the base, where the submit side has it
    assert read_guest_file(overlay, "answer.txt").strip() == "count=5 sum=100 min=4 max=42"
