"""``vmgahp run``: submit description -> job ad (pure; no daemon, no hypervisor)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from vmgahp.job.jobad import JobAd
from vmgahp.run.submit import KNOWN, LEGACY, Identity, SubmitError, build, load, parse_bool, parse_mib, quote

ALICE = Identity("alice", "example.org")

KVM_JOB = """\
universe   = vm
vm_type    = kvm
executable = my-vm
vm_memory  = 256
vm_disk    = disk.img:vda:w
queue
"""


def write(tmp_path: Path, text: str, files: tuple[str, ...] = ("disk.img",), name: str = "job.sub") -> Path:
    for file in files:
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_bytes(b"x")
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def make(tmp_path: Path, text: str, files: tuple[str, ...] = ("disk.img",), **kwargs):
    return build(load(write(tmp_path, text, files)), ALICE, **kwargs)


def error(tmp_path: Path, text: str, files: tuple[str, ...] = ("disk.img",)) -> SubmitError:
    with pytest.raises(SubmitError) as info:
        make(tmp_path, text, files)
    return info.value


# ------------------------------------------------------------------ mapping


def test_minimal_kvm_job_ad(tmp_path: Path) -> None:
    job = make(tmp_path, KVM_JOB)
    ad = job.ad
    assert ad["JobUniverse"] == "13"
    assert ad["ClusterId"] == "1" and ad["ProcId"] == "0"
    assert ad["Cmd"] == '"my-vm"'
    assert ad["JobVMType"] == '"kvm"'
    assert ad["JobVMMemory"] == "256"
    assert ad["RequestMemory"] == "MY.JobVMMemory"  # SetRequestMem without request_memory
    assert ad["JobVM_VCPUS"] == "1" and ad["RequestCpus"] == "1"
    assert ad["JobVMCheckpoint"] == "false"
    assert ad["JobVMNetworking"] == "false"
    assert ad["JobVMVNCConsole"] == "false"
    assert ad["VMPARAM_vm_Disk"] == '"disk.img:vda:w"'
    assert ad["ShouldTransferFiles"] == '"YES"'
    assert ad["WhenToTransferOutput"] == '"ON_EXIT"'
    assert ad["TransferExecutable"] == "false"  # the executable is only a label
    # condor_submit 25 transfers transfer_input_files only, not vm_disk's files
    assert "TransferInput" not in ad and job.inputs == []
    assert [(h.command, h.line, h.lines) for h in job.hints] == [("vm_disk", 5, ("transfer_input_files = disk.img",))]
    assert "VMGAHP_ERR_JOBCLASSAD_KVM_INVALID_DISK_PARAM" in job.hints[0].reason
    assert ad["Owner"] == '"alice"'
    assert ad["User"] == '"alice@example.org"'
    assert ad["Iwd"] == f'"{tmp_path}"'
    assert ad["ExecutableSize"] == str(256 * 1024)
    assert "VMPARAM_No_Output_VM" not in ad and "JobVMHardwareVT" not in ad
    assert job.vm_name == "alice_example.org_1.0"  # create_name_for_VM
    assert job.checkpoint is False and job.vm_type == "kvm" and job.memory_mib == 256


def test_every_kvm_command(tmp_path: Path) -> None:
    job = make(
        tmp_path,
        """\
        universe           = VM
        vm_type            = KVM
        executable         = every
        vm_memory          = 1G
        vm_vcpus           = 3
        vm_macaddr         = 52:54:00:12:34:56
        vm_networking      = true
        vm_networking_type = nat
        vm_checkpoint      = true
        when_to_transfer_output = ON_EXIT_OR_EVICT
        vm_hardware_vt     = true
        vm_vnc             = TRUE
        vm_no_output_vm    = 1
        vm_disk            = disk.img:vda:w:raw, /shared/data.qcow2:vdb:r:qcow2
        vm_snapshot_disk   = true
        vm_cdrom_files     = job.sh, sub/input.txt, /shared/big.dat
        kvm_cdrom_device   = hdc
        request_memory     = 2G
        request_cpus       = 4
        transfer_input_files = extra.tar, disk.img
        queue
        """,
        files=("disk.img", "job.sh", "sub/input.txt", "extra.tar"),
    )
    ad = job.ad
    assert ad["JobVMType"] == '"kvm"'  # lower-cased
    assert ad["JobVMMemory"] == "1024"
    assert ad["JobVM_VCPUS"] == "3"
    assert ad["JobVM_MACADDR"] == '"52:54:00:12:34:56"'
    assert ad["JobVMNetworking"] == "true"
    assert ad["JobVMNetworkingType"] == '"nat"'
    assert ad["JobVMCheckpoint"] == "true"
    assert ad["JobVMHardwareVT"] == "true"
    assert ad["JobVMVNCConsole"] == "true"
    assert ad["VMPARAM_No_Output_VM"] == "true"
    assert ad["VMPARAM_vm_Disk"] == '"disk.img:vda:w:raw, /shared/data.qcow2:vdb:r:qcow2"'  # unchanged
    assert ad["VMPARAM_vm_Snapshot_Disk"] == "true"
    # transferred CD-ROM files by base name, the others as given
    assert ad["VMPARAM_CDROM_Files"] == '"job.sh,input.txt,/shared/big.dat"'
    assert ad["VMPARAM_Kvm_CDROM_Device"] == '"hdc"'
    assert ad["RequestMemory"] == "2048"
    assert ad["RequestCpus"] == "4"
    assert ad["ExecutableSize"] == str(1024 * 1024)
    assert ad["WhenToTransferOutput"] == '"ON_EXIT_OR_EVICT"'
    assert ad["TransferInput"] == '"extra.tar,disk.img,job.sh,sub/input.txt"'
    assert [i.name for i in job.inputs] == ["extra.tar", "disk.img", "job.sh", "input.txt"]
    assert job.snapshot_disk and job.no_output_vm and job.checkpoint and job.vcpus == 3


def test_every_xen_command(tmp_path: Path) -> None:
    job = make(
        tmp_path,
        """\
        universe          = vm
        vm_type           = xen
        executable        = xen-job
        vm_memory         = 512
        xen_kernel        = vmlinuz
        xen_initrd        = initrd.img
        xen_root          = /dev/xvda1
        xen_kernel_params = "console=hvc0 quiet"
        xen_disk          = root.img:xvda1:w
        xen_cdrom_device  = xvdc
        vm_cdrom_files    = data.txt
        xen_transfer_files = extra.bin, {tmp_path}/abs/other.bin
        transfer_input_files = vmlinuz, initrd.img, root.img
        queue
        """.format(tmp_path=tmp_path),
        files=("vmlinuz", "initrd.img", "root.img", "data.txt", "extra.bin", "abs/other.bin"),
    )
    ad = job.ad
    assert ad["JobVMType"] == '"xen"'
    assert ad["VMPARAM_Xen_Kernel"] == '"vmlinuz"'
    assert ad["VMPARAM_Xen_Initrd"] == '"initrd.img"'
    assert ad["VMPARAM_Xen_Root"] == '"/dev/xvda1"'
    assert ad["VMPARAM_Xen_Kernel_Params"] == '"console=hvc0 quiet"'  # quotes trimmed
    assert ad["VMPARAM_vm_Disk"] == '"root.img:xvda1:w"'  # xen_disk is vm_disk's Xen spelling
    assert ad["VMPARAM_Xen_CDROM_Device"] == '"xvdc"'
    assert ad["VMPARAM_Xen_Transfer_Files"] == '"extra.bin,other.bin"'
    names = [i.name for i in job.inputs]
    assert sorted(names) == ["data.txt", "extra.bin", "initrd.img", "other.bin", "root.img", "vmlinuz"]
    assert "JobVMHardwareVT" not in ad


def test_tables_cover_the_brief() -> None:
    # what condor_submit 25 knows (submit_utils.cpp:5098-5112 plus executable) ...
    assert {cmd.keys[0]: cmd.attr for cmd in KNOWN} == {
        "executable": "Cmd", "vm_type": "JobVMType", "vm_memory": "JobVMMemory", "vm_vcpus": "JobVM_VCPUS",
        "vm_macaddr": "JobVM_MACADDR", "vm_networking": "JobVMNetworking",
        "vm_networking_type": "JobVMNetworkingType", "vm_checkpoint": "JobVMCheckpoint",
        "vm_vnc": "JobVMVNCConsole", "vm_no_output_vm": "VMPARAM_No_Output_VM", "vm_disk": "VMPARAM_vm_Disk",
        "xen_kernel": "VMPARAM_Xen_Kernel", "xen_initrd": "VMPARAM_Xen_Initrd", "xen_root": "VMPARAM_Xen_Root",
        "xen_kernel_params": "VMPARAM_Xen_Kernel_Params",
    }  # fmt: skip
    # ... and what only vmgahp knows, each with the + attributes that do the same on a pool
    assert {entry.command: entry.attrs for entry in LEGACY} == {
        "vm_cdrom_files": ("VMPARAM_CDROM_Files",), "vm_should_transfer_cdrom_files": (),
        "kvm_cdrom_device": ("VMPARAM_Kvm_CDROM_Device",), "xen_cdrom_device": ("VMPARAM_Xen_CDROM_Device",),
        "xen_transfer_files": ("VMPARAM_Xen_Transfer_Files",),
        "kvm_transfer_files": ("VMPARAM_Kvm_Transfer_Files",), "vm_snapshot_disk": ("VMPARAM_vm_Snapshot_Disk",),
        "vm_hardware_vt": ("JobVMHardwareVT",), "vmware_should_transfer_files": ("VMPARAM_VMware_Transfer",),
        "vmware_snapshot_disk": ("VMPARAM_VMware_SnapshotDisk",),
        "vmware_dir": ("VMPARAM_VMware_Dir", "VMPARAM_VMware_VMX_File", "VMPARAM_VMware_VMDK_Files"),
    }  # fmt: skip


def test_xen_vmx_kernel_sets_hardware_vt(tmp_path: Path) -> None:
    job = make(tmp_path, KVM_JOB.replace("kvm", "xen").replace("queue", "xen_kernel = vmx\nqueue"))
    assert job.ad["JobVMHardwareVT"] == "true"
    assert "VMPARAM_Xen_Root" not in job.ad


def test_macros_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGES", "imgs")
    job = make(
        tmp_path,
        """\
        universe   = vm
        vm_type    = kvm
        name       = mac$(Cluster)
        mem        = 384
        executable = $(name)-$(ClusterId).$(ProcId)
        vm_memory  = $(mem)
        images     = $ENV(IMAGES)
        vm_disk    = $(images)/$(name).img:vda:w
        transfer_input_files = $(images)/$(name).img
        if defined mem
          vm_vcpus = 2
        else
          vm_vcpus = 1
        endif
        queue
        """,
        files=("imgs/mac1.img",),
    )
    assert job.ad["Cmd"] == '"mac1-1.0"'
    assert job.ad["JobVMMemory"] == "384"
    assert job.ad["VMPARAM_vm_Disk"] == '"imgs/mac1.img:vda:w"'
    assert job.ad["JobVM_VCPUS"] == "2"
    assert job.inputs[0].name == "mac1.img" and job.inputs[0].source == tmp_path / "imgs/mac1.img"
    assert job.ad["TransferInput"] == '"imgs/mac1.img"'


def test_request_memory_and_cpus_are_the_fallbacks(tmp_path: Path) -> None:
    # VM_MEMORY and VM_VCPUS default to $(Request_Memory) and $(Request_CPUs)
    job = make(tmp_path, KVM_JOB.replace("vm_memory  = 256", "request_memory = 768\nrequest_cpus = 2"))
    assert job.ad["JobVMMemory"] == "768"
    assert job.ad["RequestMemory"] == "768"
    assert job.ad["JobVM_VCPUS"] == "2" and job.ad["RequestCpus"] == "2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("TRUE", True), ("True ", True), ("1", True), ("false", False), ("False", False),
     ("0", False), ("(1 == 1)", True), ("2 > 3", False), ("yes", None), ("maybe", None), ("truex", None)],
)  # fmt: skip
def test_booleans_as_condor_submit_reads_them(text: str, expected: bool | None) -> None:
    assert parse_bool(text) is expected


def test_bad_boolean_names_the_line(tmp_path: Path) -> None:
    exc = error(tmp_path, KVM_JOB.replace("queue", "vm_checkpoint = yes\nqueue"))
    assert exc.line == 6
    assert "vm_checkpoint = yes is invalid, must eval to a boolean" in str(exc)
    assert str(exc).startswith(f"{tmp_path / 'job.sub'}:6: ")


@pytest.mark.parametrize(
    ("text", "mib"),
    [("512", 512), ("1G", 1024), ("1g", 1024), ("1GB", 1024), ("1.5G", 1536), ("2048K", 2), ("1000K", 1),
     ("3M", 3), (" 64 ", 64), ("0", 0), ("-5", -4), ("abc", None), ("12 parsecs", None),
     (".5G", 512), ("2 GB ", 2048), ("1.2345G", 1264), ("5 GiB", None), ("0.5", 1)],
)  # fmt: skip
def test_memory_units(text: str, mib: int | None) -> None:
    assert parse_mib(text) == mib


def test_bad_memory_names_the_line(tmp_path: Path) -> None:
    exc = error(tmp_path, KVM_JOB.replace("vm_memory  = 256", "vm_memory  = lots"))
    assert exc.line == 4 and "vm_memory = lots is incorrectly specified" in exc.message
    exc = error(tmp_path, KVM_JOB.replace("vm_memory  = 256", "vm_memory  = 0"))
    assert exc.line == 4


def test_checkpoint_with_networking_needs_on_exit_or_evict(tmp_path: Path) -> None:
    text = KVM_JOB.replace("queue", "vm_checkpoint = true\nvm_networking = true\nqueue")
    exc = error(tmp_path, text)
    assert exc.line == 7 and "ON_EXIT_OR_EVICT" in exc.message
    job = make(tmp_path, text.replace("queue", "when_to_transfer_output = ON_EXIT_OR_EVICT\nqueue"))
    assert job.ad["WhenToTransferOutput"] == '"ON_EXIT_OR_EVICT"'


def test_networking_type_needs_networking(tmp_path: Path) -> None:
    job = make(tmp_path, KVM_JOB.replace("queue", "vm_networking_type = nat\nqueue"))
    assert "JobVMNetworkingType" not in job.ad
    assert any("vm_networking_type needs vm_networking" in w for w in job.warnings)


def test_transfer_list_dedupes_by_name(tmp_path: Path) -> None:
    # The image is listed in transfer_input_files from elsewhere; vm_disk names it by base name.
    images = tmp_path / "cache"
    images.mkdir()
    (images / "boot.img").write_bytes(b"x")
    job = make(
        tmp_path,
        KVM_JOB.replace("disk.img:vda:w", "boot.img:vda:w:raw").replace(
            "queue", f"transfer_input_files = {images}/boot.img\nqueue"
        ),
        files=(),
    )
    assert [(i.name, i.source) for i in job.inputs] == [("boot.img", images / "boot.img")]
    assert job.ad["TransferInput"] == f'"{images}/boot.img"'  # as written
    assert job.hints == []


def test_absolute_disks_are_not_transferred(tmp_path: Path) -> None:
    job = make(tmp_path, KVM_JOB.replace("disk.img:vda:w", "/var/lib/images/disk.img:vda:w"), files=())
    assert job.inputs == [] and "TransferInput" not in job.ad


def test_missing_input_file_names_the_line(tmp_path: Path) -> None:
    exc = error(tmp_path, KVM_JOB.replace("queue", "transfer_input_files = disk.img\nqueue"), files=())
    assert exc.line == 6 and f"cannot find {tmp_path / 'disk.img'}" in exc.message
    text = KVM_JOB.replace("queue", "transfer_input_files = a.txt, nope.txt\nqueue")
    exc = error(tmp_path, text, files=("disk.img", "a.txt"))
    assert exc.line == 6 and "nope.txt" in exc.message


def test_two_inputs_with_one_name(tmp_path: Path) -> None:
    exc = error(tmp_path, KVM_JOB.replace("queue", "vm_cdrom_files = a/x.txt, b/x.txt\nqueue"),
                files=("disk.img", "a/x.txt", "b/x.txt"))
    assert exc.line == 6 and "two input files are named 'x.txt'" in exc.message


def test_custom_attributes(tmp_path: Path) -> None:
    job = make(tmp_path, KVM_JOB.replace("queue", '+Project = "vm-tests"\nMY.Weight = 3\n+JobVMMemory = 300\nqueue'))
    assert job.ad["Project"] == '"vm-tests"'
    assert job.ad["Weight"] == "3"
    assert job.ad["JobVMMemory"] == "300"  # +attrs win, as SetForcedAttributes runs last
    exc = error(tmp_path, KVM_JOB.replace("queue", "+Broken = foo bar(\nqueue"))
    assert exc.line == 6 and "not a valid ClassAd expression" in exc.message


def test_the_ad_has_no_transfer_intermediate(tmp_path: Path) -> None:
    """HTCondor 25's starter never sends it, on a restart neither: the gahp
    finds a checkpoint in its working directory."""
    assert "TransferIntermediate" not in make(tmp_path, KVM_JOB).ad


def test_cluster_id_names_the_vm(tmp_path: Path) -> None:
    job = make(tmp_path, KVM_JOB, cluster_id=77)
    assert job.ad["ClusterId"] == "77" and job.vm_name == "alice_example.org_77.0"


def test_the_gahp_reads_the_ad(tmp_path: Path) -> None:
    """The lines parse with vmgahp's own ClassAd reader, expressions included."""
    job = make(tmp_path, KVM_JOB.replace("queue", 'vm_checkpoint = true\n+Note = "say \\"hi\\""\nqueue'))
    ad = JobAd([f'VM_WORKING_DIR = "{tmp_path}"', *job.ad_lines()])
    assert ad.dropped == []
    assert ad.get_int("RequestMemory") == 256  # MY.JobVMMemory, evaluated
    assert ad.get_str("JobVMType") == "kvm"
    assert ad.get_bool("JobVMCheckpoint") is True
    assert ad.get_str("VMPARAM_vm_Disk") == "disk.img:vda:w"
    assert ad.get_str("Note") == 'say "hi"'


def test_quote_escapes_only_double_quotes() -> None:
    assert quote('a "b" c\\d') == '"a \\"b\\" c\\d"'
    with pytest.raises(ValueError):
        quote("two\nlines")


def test_queue_count_runs_the_first_job(tmp_path: Path) -> None:
    job = make(tmp_path, KVM_JOB.replace("queue", "queue 5"))
    assert any("ProcId 0" in w for w in job.warnings)
    exc = error(tmp_path, KVM_JOB.replace("queue", "queue name in (a b)"))
    assert exc.line == 6


def test_commands_for_the_other_type_are_ignored(tmp_path: Path) -> None:
    job = make(tmp_path, KVM_JOB.replace("queue", "xen_kernel = included\nqueue"))
    assert "VMPARAM_Xen_Kernel" not in job.ad
    assert any("xen_kernel is ignored for vm_type = kvm" in w for w in job.warnings)


# ------------------------------------------------------- line-numbered errors


def test_missing_universe_names_the_queue_line(tmp_path: Path) -> None:
    text = "# a VM job\nvm_type = kvm\nexecutable = x\nvm_memory = 1\nvm_disk = disk.img:vda:w\n\nqueue\n"
    exc = error(tmp_path, text)
    assert exc.line == 7
    assert "universe = vm" in exc.message
    assert str(exc) == f"{tmp_path / 'job.sub'}:7: {exc.message}"


def test_other_universe_names_its_line(tmp_path: Path) -> None:
    exc = error(tmp_path, KVM_JOB.replace("universe   = vm", "universe   = vanilla"))
    assert exc.line == 1 and "universe = vanilla" in exc.message


@pytest.mark.parametrize(
    "disk", ["disk.img:vda", "disk.img", "disk.img:vda:w:raw:extra", "disk.img:vda:w, other.img:vdb"]
)
def test_bad_vm_disk_item_names_the_line(tmp_path: Path, disk: str) -> None:
    exc = error(tmp_path, KVM_JOB.replace("disk.img:vda:w", disk))
    assert exc.line == 5
    assert "vm_disk item" in exc.message and "<file>:<device>:<permission>[:<format>]" in exc.message


def test_vm_disk_items_as_submit_counts_them(tmp_path: Path) -> None:
    # validate_disk_param counts colons per comma item and skips empty items
    job = make(tmp_path, KVM_JOB.replace("disk.img:vda:w", " disk.img:vda:w:, ,disk.img::w"))
    assert job.ad["VMPARAM_vm_Disk"] == '"disk.img:vda:w:, ,disk.img::w"'


def test_unknown_vm_type_names_the_line(tmp_path: Path) -> None:
    exc = error(tmp_path, KVM_JOB.replace("vm_type    = kvm", "vm_type    = virtualbox"))
    assert exc.line == 2 and "unknown vm_type 'virtualbox'" in exc.message


def test_vmware_needs_its_own_commands(tmp_path: Path) -> None:
    """vm_type = vmware is run (drivers/vmware); the old submit's vmware_* commands are required."""
    exc = error(tmp_path, KVM_JOB.replace("vm_type    = kvm", "vm_type    = VMware"))
    assert "vmware_should_transfer_files cannot be found" in exc.message
    exc = error(tmp_path, KVM_JOB.replace("vm_type    = kvm",
                                          "vm_type    = vmware\nvmware_should_transfer_files = true"))
    assert "vmware_dir cannot be found" in exc.message


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("universe = vm\nvm_type kvm\nqueue\n", 2, "expected 'command = value'"),
        ("universe = vm\n\nvm-type = kvm\nqueue\n", 3, "not a valid submit command name"),
        ("universe = vm\nvm_memory := 5\nqueue\n", 2, "not a valid submit command name"),
        ("# c\nuniverse = vm\nexecutable = $(name\nqueue\n", 3, "unterminated macro"),
        ("if $(x)\nuniverse = vm\nqueue\n", 1, "'if' without a matching 'endif'"),
        ("universe = vm\nelse\nqueue\n", 2, "'else' without a matching 'if'"),
        ("universe = vm\nendif\nqueue\n", 2, "'endif' without a matching 'if'"),
        ("universe = vm\ninclude : other.sub\nqueue\n", 2, "not supported"),
        ("universe = vm\nexecutable = a \\\n", 2, "past the end of the file"),
        ("universe = vm\nscript @=END\necho hi\nqueue\n", 2, "no closing '@END'"),
        ("universe = vm\n+bad-name = 1\nqueue\n", 2, "not a valid job attribute name"),
        ("universe = vm\nexecutable = $ENV(X:a-b)\nqueue\n", 2, "cannot expand the macro"),
        ("universe = vm\nmem = 1\nif $(mem) > 256\nvm_vcpus = 2\nendif\nqueue\n", 3, "complex conditionals"),
    ],
)
def test_syntax_errors_name_the_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    exc = error(tmp_path, text)
    assert exc.line == line, exc
    assert words in exc.message


def test_continuation_and_multiline_values_parse(tmp_path: Path) -> None:
    job = make(tmp_path, "universe = vm\nvm_type = kvm\nexecutable = x\nvm_memory = \\\n   128\n"
                         "notes @=END\nfree text = with equals\n@END\nvm_disk = disk.img:vda:w\nqueue\n")
    assert job.ad["JobVMMemory"] == "128"


def test_empty_after_expansion_names_the_line(tmp_path: Path) -> None:
    exc = error(tmp_path, KVM_JOB.replace("vm_memory  = 256", "vm_memory  = $(undefined_macro)"))
    assert exc.line == 4 and "vm_memory is empty after expanding '$(undefined_macro)'" in exc.message


@pytest.mark.parametrize(
    ("drop", "line", "words"),
    [
        ("vm_type    = kvm", 6, "vm_type cannot be found"),
        ("vm_memory  = 256", 6, "vm_memory cannot be found"),
        ("vm_disk    = disk.img:vda:w", 6, "vm_disk cannot be found"),
        ("executable = my-vm", 6, "executable cannot be found"),
    ],
)
def test_required_commands(tmp_path: Path, drop: str, line: int, words: str) -> None:
    exc = error(tmp_path, KVM_JOB.replace(drop, "# (dropped)"))
    assert exc.line == line and words in exc.message


def test_more_vm_rules(tmp_path: Path) -> None:
    assert "no output file" in error(tmp_path, KVM_JOB.replace("queue", "output = out.txt\nqueue")).message
    text = KVM_JOB.replace("queue", "vm_cdrom_files = a.iso, b.txt\nqueue")
    exc = error(tmp_path, text, files=("disk.img", "a.iso", "b.txt"))
    assert exc.line == 6 and ".iso" in exc.message
    exc = error(tmp_path, KVM_JOB.replace("queue", "vm_cdrom_files = b.txt\nkvm_cdrom_device = hdc:cdrom\nqueue"),
                files=("disk.img", "b.txt"))
    assert exc.line == 7 and "just a device name" in exc.message
    xen = KVM_JOB.replace("vm_type    = kvm", "vm_type    = xen")
    assert "xen_kernel cannot be found" in error(tmp_path, xen).message
    exc = error(tmp_path, xen.replace("queue", "xen_kernel = included\nxen_initrd = initrd.img\nqueue"),
                files=("disk.img", "initrd.img"))
    assert exc.line == 7 and "real kernel file" in exc.message
    exc = error(tmp_path, xen.replace("queue", "xen_kernel = /boot/vmlinuz\nqueue"))
    assert exc.line == 6 and "xen_root" in exc.message


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "job.sub"
    path.write_bytes(b"universe = vm\nexecutable = \xff\xfe\nqueue\n")
    with pytest.raises(SubmitError) as info:
        load(path)
    assert info.value.line == 2
    with pytest.raises(SubmitError) as info:
        load(tmp_path / "missing.sub")
    assert "cannot read" in str(info.value)
