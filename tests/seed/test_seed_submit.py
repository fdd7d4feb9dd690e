"""The talk's submit commands, each through ``vmgahp run`` of a tiny submit file.

Every test runs the real thing: ``vmgahp run`` maps the file as condor_submit
does, the local starter sends the job ad to the real daemon, the daemon
starts the VM on libvirt's test hypervisor; the test then reads what the
starter sent (``run.ad``), the domain XML the gahp started (``run.xml``, from
its debug log) and what came back. The talk's commands that HTCondor 25's
condor_submit no longer knows (``vm_cdrom_files``, ``xen_disk``, ...) are
honoured by ``vmgahp run`` with a hint naming their pool form
(``run/submit_legacy.py``). Harness: ``tests/seed_harness.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

import seed_harness as h

XEN = {"XEN_BOOTLOADER": "/bin/true"}
NET = {"VM_NETWORKING": True, "VM_NETWORKING_TYPE": "nat, bridge, user", "VM_NETWORKING_BRIDGE_INTERFACE": "br0"}


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vmgahp-seed-submit-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def kvm(*lines: str, disk: str = "vm_disk = disk.img:vda:w:raw", transfer: str = "disk.img") -> str:
    body = "\n".join(lines)
    return (f"universe = vm\nvm_type = kvm\nexecutable = seed\nvm_memory = 128\n{disk}\n"
            f"transfer_input_files = {transfer}\n{body}\nqueue\n")


def xen(*lines: str, disk: str = "vm_disk = xen.img:xvda:w", transfer: str = "xen.img",
        kernel: str = "xen_kernel = included") -> str:
    body = "\n".join(lines)
    return (f"universe = vm\nvm_type = xen\nexecutable = seed\nvm_memory = 128\n{disk}\n{kernel}\n"
            f"transfer_input_files = {transfer}\n{body}\nqueue\n")


def started(run: h.Run) -> h.Run:
    assert run.code == 124 and run.xml is not None, run.out + run.conversation[-4000:]
    return run


def cdrom(run: h.Run):
    return run.xml.find("devices/disk[@device='cdrom']")


# ------------------------------------------------------------------ the commands
def test_universe_vm(base: Path) -> None:
    run = started(h.run_job(base, kvm()))
    assert run.ad["JobUniverse"] == "13"  # CONDOR_UNIVERSE_VM
    other = h.run_job(base, kvm().replace("universe = vm", "universe = vanilla"), name="vanilla")
    assert other.code == 2 and "universe" in other.conversation


def test_executable_is_a_label_only(base: Path) -> None:
    run = started(h.run_job(base, kvm()))
    assert not (base / "job" / "seed").exists()  # no such file: nothing is transferred or run
    assert run.ad["Cmd"] == '"seed"' and run.ad["TransferExecutable"] == "false"


def test_vm_type(base: Path) -> None:
    assert started(h.run_job(base, kvm())).xml.get("type") in ("kvm", "qemu")
    run = started(h.run_job(base, xen(), {"xen.img": 8 << 20}, name="xen", knobs=XEN))
    assert run.ad["JobVMType"] == '"xen"' and run.xml.get("type") == "xen"


def test_vm_memory_in_mb(base: Path) -> None:
    run = started(h.run_job(base, kvm().replace("vm_memory = 128", "vm_memory = 200")))
    assert run.ad["JobVMMemory"] == "200"
    assert run.xml.find("memory").get("unit") == "KiB" and run.xml.findtext("memory") == str(200 * 1024)


def test_vm_networking(base: Path) -> None:
    run = started(h.run_job(base, kvm("vm_networking = true"), knobs=NET))
    assert run.ad["JobVMNetworking"] == "true" and run.xml.find("devices/interface") is not None
    off = started(h.run_job(base, kvm("vm_networking = false"), name="off", knobs=NET))
    assert off.xml.find("devices/interface") is None


def test_vm_networking_type(base: Path) -> None:
    for kind, libvirt_type in (("nat", "network"), ("bridge", "bridge"), ("user", "user")):
        run = started(h.run_job(base, kvm("vm_networking = true", f"vm_networking_type = {kind}"), name=kind,
                                knobs=NET))
        assert run.ad["JobVMNetworkingType"] == f'"{kind}"'
        assert run.xml.find("devices/interface").get("type") == libvirt_type


def test_vm_cdrom_files_a_list_or_one_iso(base: Path) -> None:
    """A list is packed into one ISO image; one ``.iso`` is the CD-ROM itself."""
    files = {"disk.img": 8 << 20, "a.txt": b"alpha\n", "b.txt": b"beta\n", "data.iso": b"\0" * 32768}
    run = started(h.run_job(base, kvm("vm_cdrom_files = a.txt, b.txt", transfer="disk.img, a.txt, b.txt"), files))
    assert run.ad["VMPARAM_CDROM_Files"] == '"a.txt,b.txt"'
    built = run.event("cdrom_built")
    assert built and built["files"] == 2
    assert cdrom(run).find("source").get("file") == built["path"] and cdrom(run).find("readonly") is not None
    one = started(h.run_job(base, kvm("vm_cdrom_files = data.iso", transfer="disk.img, data.iso"), files,
                            name="iso"))
    assert one.event("cdrom_given") and not one.event("cdrom_built")
    assert cdrom(one).find("source").get("file") == str(one.scratch / "data.iso")


def test_vm_should_transfer_cdrom_files(base: Path) -> None:
    """true: the files travel with the job (by base name); false: they are read on
    the execute side from a shared filesystem, by full path, and not transferred."""
    shared = base / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    (shared / "input.txt").write_text("from the shared filesystem\n")
    os.chmod(shared / "input.txt", 0o644)
    files = {"disk.img": 8 << 20, "input.txt": b"sent with the job\n"}
    sent = started(h.run_job(base, kvm("vm_cdrom_files = input.txt", "vm_should_transfer_cdrom_files = true"), files))
    assert sent.ad["VMPARAM_CDROM_Files"] == '"input.txt"' and "input.txt" in sent.ad["TransferInput"]
    assert (sent.scratch / "input.txt").exists()
    submit = kvm(f"vm_cdrom_files = {shared}/input.txt", "vm_should_transfer_cdrom_files = false")
    here = started(h.run_job(base, submit, files, name="shared"))
    assert here.ad["VMPARAM_CDROM_Files"] == f'"{shared}/input.txt"'
    assert "input.txt" not in here.ad["TransferInput"] and not (here.scratch / "input.txt").exists()
    assert here.event("cdrom_built")["files"] == 1


def test_vm_checkpoint(base: Path) -> None:
    """Vacated with a checkpoint (memory state + overlay), resumed from it: restored, not booted."""
    submit = kvm("vm_checkpoint = true", "vm_snapshot_disk = true", "when_to_transfer_output = ON_EXIT_OR_EVICT")
    first = h.run_job(base, submit)
    assert first.code == 124 and first.ad["JobVMCheckpoint"] == "true"
    saved = sorted(p.name for p in (first.output / "checkpoint").iterdir())
    assert "xen.mem.ckpt" in saved and "vmgahp-overlay-vda.qcow2" in saved and "disk.img" not in saved
    again = h.run_job(base, submit, name="again", sub=base / "job" / "job.sub",
                      args=("--resume", str(first.output / "checkpoint")))
    assert again.code == 124 and again.event("domain_restored") and not again.event("domain_started")


def vmware_run(base: Path, *lines: str) -> h.Run:
    """``vmgahp run`` of a VMware job up to the gahp's start: the job ad is made and its
    files transferred, then the VMware gahp refuses to start - there is no vCenter here
    (end to end on vCenter's simulator: tests/vmware, marked vcsim). The ad is read
    back from the pool form vmgahp run prints (condor_submit 25 ignores these commands)."""
    vm = base / "vm"
    vm.mkdir(exist_ok=True)
    for name in ("guest.vmx", "disk.vmdk", "notes.txt"):
        (vm / name).write_bytes(b"x")
    text = "universe = vm\nvm_type = vmware\nexecutable = seed\nvm_memory = 128\n" + "\n".join(lines) + "\nqueue\n"
    run = h.run_job(base, "", name="vmware", sub=h.write_job(base / "vmware", text, {}))
    assert run.code == 1 and "VMWARE_VSPHERE_URL" in run.conversation, run.out + run.conversation
    return run


def test_vmware_dir(base: Path) -> None:
    """The .vmx and .vmdk files of the directory, and with vmware_should_transfer_files
    all of its files, travel with the job."""
    run = vmware_run(base, "vmware_should_transfer_files = true", f"vmware_dir = {base / 'vm'}")
    said = run.out + run.conversation
    assert '+VMPARAM_VMware_VMX_File = "guest.vmx"' in said and '+VMPARAM_VMware_VMDK_Files = "disk.vmdk"' in said
    assert {p.name for p in run.scratch.iterdir()} >= {"guest.vmx", "disk.vmdk", "notes.txt"}
    only_vmx = vmware_run(base / "vm", "vmware_should_transfer_files = false", "vmware_snapshot_disk = true",
                          f"vmware_dir = {base / 'vm'}")
    assert "guest.vmx" in {p.name for p in only_vmx.scratch.iterdir()}
    assert "disk.vmdk" not in {p.name for p in only_vmx.scratch.iterdir()}  # read from the shared filesystem


def test_vmware_should_transfer_files(base: Path) -> None:
    run = vmware_run(base, "vmware_should_transfer_files = true", f"vmware_dir = {base / 'vm'}")
    assert "+VMPARAM_VMware_Transfer = true" in run.out + run.conversation


def test_vmware_snapshot_disk(base: Path) -> None:
    run = vmware_run(base, "vmware_should_transfer_files = true", "vmware_snapshot_disk = true",
                     f"vmware_dir = {base / 'vm'}")
    assert "+VMPARAM_VMware_SnapshotDisk = true" in run.out + run.conversation
    refused = h.run_job(base, "", name="both-false", sub=h.write_job(base / "both-false", (
        "universe = vm\nvm_type = vmware\nexecutable = seed\nvm_memory = 128\nvmware_should_transfer_files = false\n"
        f"vmware_snapshot_disk = false\nvmware_dir = {base / 'vm'}\nqueue\n"), {}))
    assert refused.code == 2 and "vmware_snapshot_disk = false" in refused.conversation


def test_xen_disk_and_kvm_disk_whole_disks_or_partitions(base: Path) -> None:
    """The old spellings of vm_disk: a whole disk (xvda, vda) or, for Xen PV, partitions
    (xvda1, xvda2) that libxl hands the guest as such."""
    whole = started(h.run_job(base, kvm(disk="kvm_disk = disk.img:vda:w:raw")))
    assert whole.ad["VMPARAM_vm_Disk"] == '"disk.img:vda:w:raw"'
    assert whole.xml.find("devices/disk/target").get("dev") == "vda"
    parts = started(h.run_job(base, xen(disk="xen_disk = root.img:xvda1:w, swap.img:xvda2:w",
                                        transfer="root.img, swap.img"),
                              {"root.img": 8 << 20, "swap.img": 1 << 20}, name="parts", knobs=XEN))
    assert [t.get("dev") for t in parts.xml.iter("target")] == ["xvda1", "xvda2"]


def test_xen_kernel_included_or_a_path(base: Path) -> None:
    files = {"xen.img": 8 << 20, "vmlinuz": b"\0" * 4096}
    inside = started(h.run_job(base, xen(), files, knobs=XEN))
    assert inside.xml.findtext("bootloader") == "/bin/true" and inside.xml.find("os/kernel") is None
    given = started(h.run_job(base, xen("xen_root = /dev/xvda", kernel="xen_kernel = vmlinuz",
                                        transfer="xen.img, vmlinuz"), files, name="path", knobs=XEN))
    assert given.xml.findtext("os/kernel") == str(given.scratch / "vmlinuz") and given.xml.find("bootloader") is None


def _pv(base: Path, *lines: str) -> h.Run:
    files = {"xen.img": 8 << 20, "vmlinuz": b"\0" * 4096, "initrd.img": b"\0" * 4096}
    return started(h.run_job(base, xen(*lines, kernel="xen_kernel = vmlinuz", transfer="xen.img, vmlinuz, initrd.img"),
                             files, knobs=XEN))


def test_xen_kernel_params(base: Path) -> None:
    run = _pv(base, "xen_root = /dev/xvda", "xen_kernel_params = console=hvc0 quiet")
    assert run.ad["VMPARAM_Xen_Kernel_Params"] == '"console=hvc0 quiet"'
    assert run.xml.findtext("os/cmdline").endswith("console=hvc0 quiet")


def test_xen_root(base: Path) -> None:
    run = _pv(base, "xen_root = /dev/xvda1")
    assert run.xml.findtext("os/cmdline").startswith("root=/dev/xvda1")


def test_xen_initrd(base: Path) -> None:
    run = _pv(base, "xen_root = /dev/xvda", "xen_initrd = initrd.img")
    assert run.xml.findtext("os/initrd") == str(run.scratch / "initrd.img")


def test_xen_cdrom_device_and_kvm_cdrom_device(base: Path) -> None:
    files = {"disk.img": 8 << 20, "xen.img": 8 << 20, "in.txt": b"x\n"}
    run = started(h.run_job(base, kvm("vm_cdrom_files = in.txt", "kvm_cdrom_device = hdd",
                                      transfer="disk.img, in.txt"), files))
    assert run.ad["VMPARAM_Kvm_CDROM_Device"] == '"hdd"' and cdrom(run).find("target").get("dev") == "hdd"
    run = started(h.run_job(base, xen("vm_cdrom_files = in.txt", "xen_cdrom_device = xvdd",
                                      transfer="xen.img, in.txt"), files, name="xen", knobs=XEN))
    assert run.ad["VMPARAM_Xen_CDROM_Device"] == '"xvdd"' and cdrom(run).find("target").get("dev") == "xvdd"


def test_xen_transfer_files_and_kvm_transfer_files(base: Path) -> None:
    """Extra files sent with the job into its scratch directory."""
    files = {"disk.img": 8 << 20, "xen.img": 8 << 20, "extra.dat": b"payload\n"}
    run = started(h.run_job(base, kvm("kvm_transfer_files = extra.dat"), files))
    assert run.ad["VMPARAM_Kvm_Transfer_Files"] == '"extra.dat"'
    assert (run.scratch / "extra.dat").read_bytes() == b"payload\n"
    run = started(h.run_job(base, xen("xen_transfer_files = extra.dat"), files, name="xen", knobs=XEN))
    assert run.ad["VMPARAM_Xen_Transfer_Files"] == '"extra.dat"' and (run.scratch / "extra.dat").exists()


@pytest.mark.libvirtd
def test_vm_no_output_vm(tiny_guest, libvirtd, tmp_path_factory) -> None:
    """The guest runs to its end and nothing of the VM comes back (a real guest: the
    test hypervisor's VMs never power off)."""
    run, _ = h.hello_run(tiny_guest, tmp_path_factory, "seed-nooutput", "vm_no_output_vm = true", 7303)
    assert run.code == 0, run.out + run.conversation[-3000:]
    assert run.ad["VMPARAM_No_Output_VM"] == "true"
    assert not run.output.exists() or not any(run.output.iterdir())
