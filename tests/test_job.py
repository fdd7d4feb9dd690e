"""Tier 1: job ad reading (classad2), START validation in the C++ order, and file access checks.

Spec sections 3.2 (ad insert rules), 4.2-4.5 (attributes, validation order, VM name,
disk strings), 1.3/1.4 and 9 (the job user).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from helpers import settings
from vmgahp.drivers.libvirt.driver import LibvirtHypervisor
from vmgahp.errors import GahpError
from vmgahp.gahp.config import Settings
from vmgahp.job.access import JobUser, can_access, job_user_from_env
from vmgahp.job.jobad import JobAd
from vmgahp.job.model import MIN_MEMORY_MIB, VmJob, build_job
from vmgahp.job.networking import NetworkPlan
from vmgahp.protocol import tokens

NO_NET = NetworkPlan((), "")
NAT_BRIDGE = NetworkPlan(("nat", "bridge"), "nat")
SETTINGS = Settings(vm_memory=1024)


# =========================================================================== JobAd
class TestJobAd:
    def test_bad_line_dropped(self):
        """A line whose value does not parse is dropped and the others are kept."""
        ad = JobAd(["A = 1", "B = (1 +", "C = 3"])
        assert ad.dropped == ["B = (1 +"]
        assert "B" not in ad
        assert (ad.get_int("A"), ad.get_int("C")) == (1, 3)

    @pytest.mark.parametrize("line", ["NoEquals", "A =", "A =   ", "= 3", "1A = 3", "A B = 3"])
    def test_malformed_lines_dropped(self, line):
        """Lines without a name, an '=' or a value are dropped."""
        ad = JobAd([line])
        assert ad.dropped == [line]

    def test_quoted_name_dropped(self):
        """A name starting with a single quote is rejected, as the old-ClassAd insert does."""
        ad = JobAd(["'Weird Name' = 3", "'X' = 1", "Y = 2"])
        assert ad.dropped == ["'Weird Name' = 3", "'X' = 1"]
        assert ad.get_int("Y") == 2

    def test_case_insensitive_names(self):
        """Attribute names are looked up case-insensitively."""
        ad = JobAd(["jobvmmemory = 512", 'JOBVMTYPE = "kvm"'])
        assert ad.get_int("JobVMMemory") == 512
        assert ad.get_str("JobVMType") == "kvm"
        assert "JOBVMMEMORY" in ad

    def test_leading_whitespace_and_no_spaces(self):
        """Leading blanks before the name and missing blanks around '=' are accepted."""
        ad = JobAd(["   G=3", '\tH="x"'])
        assert (ad.get_int("G"), ad.get_str("H")) == (3, "x")

    def test_later_line_replaces_earlier(self):
        """A later line for the same name (any case) replaces the earlier value."""
        ad = JobAd(["A = 1", "a = 2"])
        assert ad.get_int("A") == 2

    @pytest.mark.parametrize("text,value", [("512.9", 512), ("-1.7", -1), ("3.0", 3), ("1e3", 1000)])
    def test_integers_from_reals_truncated(self, text, value):
        """An integer lookup of a real value truncates toward zero."""
        assert JobAd([f"X = {text}"]).get_int("X") == value

    @pytest.mark.parametrize("text,value", [("1", True), ("0", False), ("0.0", False), ("2.5", True), ("-1", True),
                                            ("true", True), ("FALSE", False)])
    def test_booleans_from_numbers(self, text, value):
        """A boolean lookup accepts booleans and numbers (non-zero is true)."""
        assert JobAd([f"X = {text}"]).get_bool("X") is value

    def test_expressions_evaluated(self):
        """Values are expressions evaluated in the ad, references included."""
        ad = JobAd(["JobVMMemory = 256 * 2", "Base = 3", "RequestCpus = Base + 1", 'U = strcat("a", "@", "b")'])
        assert ad.get_int("JobVMMemory") == 512
        assert ad.get_int("RequestCpus") == 4
        assert ad.get_str("U") == "a@b"

    def test_wrong_types_are_absent(self):
        """A lookup of the wrong type, a missing name or an undefined value gives None."""
        ad = JobAd(['S = "512"', "I = 3", "U = NoSuchAttr", "L = {1, 2}"])
        assert ad.get_int("S") is None
        assert ad.get_str("I") is None
        assert ad.get_bool("S") is None
        assert ad.get_int("U") is None
        assert ad.get_int("L") is None
        assert ad.get_int("Missing") is None

    def test_backslashes_literal_in_old_syntax(self):
        """Old-syntax strings keep backslashes literally, since the starter does not escape them (spec 4.1)."""
        ad = JobAd(['A = "x\\y"', 'B = "a\\tb"', 'C = "ends\\"'])
        assert ad.dropped == []
        assert (ad.get_str("A"), ad.get_str("B"), ad.get_str("C")) == ("x\\y", "a\\tb", "ends\\")

    def test_value_containing_equals(self):
        """Only the first '=' separates name and value; '==' inside the expression is kept."""
        ad = JobAd(['Requirements = (Arch == "X86_64") && (Memory >= 5)', "Flag = (1 == 1)"])
        assert ad.dropped == []
        assert "Requirements" in ad
        assert ad.get_bool("Flag") is True

    def test_string_with_escaped_quote(self):
        """Old-syntax strings with an escaped double quote are read back unescaped."""
        ad = JobAd(['A = "say \\"hi\\""'])
        assert ad.get_str("A") == 'say "hi"'


# =========================================================================== build_job helpers
@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The job's scratch dir with transferred files a.img, vmlinuz and initrd.img."""
    wd = tmp_path / "scratch"
    wd.mkdir()
    for name in ("a.img", "vmlinuz", "initrd.img"):
        (wd / name).write_bytes(b"\0" * 16)
    return wd


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A 'shared filesystem' dir outside the scratch dir."""
    sh = tmp_path / "shared"
    sh.mkdir()
    for name in ("base.img", "boot.iso", "my.isotope.img", "kernel-5.10", "initrd-5.10"):
        (sh / name).write_bytes(b"\0" * 16)
    return sh


def ad_lines(workdir: Path, vm_type: str = "kvm", **attrs: str | None) -> list[str]:
    """A minimal valid ad; keyword arguments override (None removes an attribute)."""
    base: dict[str, str | None] = {
        "VM_WORKING_DIR": f'"{workdir}"',
        "JobVMType": f'"{vm_type}"',
        "JobVMMemory": "512",
        "User": '"alice@example.org"',
        "ClusterId": "42",
        "ProcId": "0",
        "VMPARAM_vm_Disk": '"a.img:vda:w"',
    }
    if vm_type == "xen":
        base["VMPARAM_Xen_Kernel"] = '"included"'
    base.update(attrs)
    return [f"{name} = {value}" for name, value in base.items() if value is not None]


def build(
    workdir: Path,
    vm_type: str = "kvm",
    settings: Settings = SETTINGS,
    network: NetworkPlan = NO_NET,
    user: JobUser | None = None,
    **attrs: str | None,
) -> VmJob:
    return build_job(JobAd(ad_lines(workdir, vm_type, **attrs)), settings, network, user, hv(vm_type, settings))


def hv(vm_type: str, settings: Settings) -> LibvirtHypervisor:
    """The driver that reads the VM-type part of the ad (no connection is opened)."""
    return LibvirtHypervisor(settings, vm_type)


def token_of(workdir: Path, vm_type: str = "kvm", **kwargs) -> str:
    with pytest.raises(GahpError) as info:
        build(workdir, vm_type, **kwargs)
    return info.value.token


# =========================================================================== build_job: KVM
class TestKvmValid:
    def test_minimal_job(self, workdir):
        """A minimal KVM ad yields the VM spec with name, memory, one vCPU and the transferred disk."""
        job = build(workdir)
        assert job.vm_type == "kvm"
        assert job.name == "alice_example.org_42.0"
        assert job.working_dir == str(workdir)
        assert job.memory_mib == 512
        assert job.vcpus == 1
        assert job.networking_type == ""
        assert job.checkpoint is False
        assert len(job.disks) == 1
        disk = job.disks[0]
        assert (disk.path, disk.device, disk.permission, disk.format, disk.transferred) == (
            str(workdir / "a.img"),
            "vda",
            "w",
            "",
            True,
        )
        assert job.extras is None

    def test_vm_name_recorded_in_ad(self, workdir):
        """On success the gahp assigns VMPARAM_VM_NAME into its copy of the ad."""
        ad = JobAd(ad_lines(workdir))
        build_job(ad, SETTINGS, NO_NET, None, hv("kvm", SETTINGS))
        assert ad.get_str("VMPARAM_VM_NAME") == "alice_example.org_42.0"

    def test_vm_name_every_at_replaced(self, workdir):
        """Every '@' in User becomes '_' in the VM name."""
        assert build(workdir, User='"a@b@c"', ClusterId="7", ProcId="3").name == "a_b_c_7.3"


class TestMemory:
    def test_missing(self, workdir):
        """Neither JobVMMemory nor RequestMemory: NO_VM_MEMORY_PARAM."""
        assert token_of(workdir, JobVMMemory=None) == tokens.JOBCLASSAD_NO_VM_MEMORY_PARAM

    @pytest.mark.parametrize("value", ["0", "-5", "1025", "100000"])
    def test_too_much_or_not_positive(self, workdir, value):
        """Memory <= 0 or above VM_MEMORY: TOO_MUCH_MEMORY_REQUEST."""
        assert token_of(workdir, JobVMMemory=value) == tokens.JOBCLASSAD_TOO_MUCH_MEMORY_REQUEST

    def test_exactly_vm_memory_allowed(self, workdir):
        """A request equal to VM_MEMORY is allowed."""
        assert build(workdir, JobVMMemory="1024").memory_mib == 1024

    def test_request_memory_fallback(self, workdir):
        """Without JobVMMemory, RequestMemory is used."""
        assert build(workdir, JobVMMemory=None, RequestMemory="256").memory_mib == 256

    def test_request_memory_fallback_checked(self, workdir):
        """The RequestMemory fallback is checked against VM_MEMORY too."""
        assert token_of(workdir, JobVMMemory=None, RequestMemory="2048") == tokens.JOBCLASSAD_TOO_MUCH_MEMORY_REQUEST

    def test_job_vm_memory_wins(self, workdir):
        """JobVMMemory takes precedence over RequestMemory when both are present."""
        assert build(workdir, JobVMMemory="300", RequestMemory="600").memory_mib == 300

    def test_zero_job_vm_memory_not_replaced_by_request_memory(self, workdir):
        """A present JobVMMemory of 0 is rejected, not replaced by RequestMemory."""
        assert token_of(workdir, JobVMMemory="0", RequestMemory="256") == tokens.JOBCLASSAD_TOO_MUCH_MEMORY_REQUEST

    def test_expression_memory(self, workdir):
        """Memory given as an expression is evaluated."""
        assert build(workdir, JobVMMemory="256 * 2").memory_mib == 512

    @pytest.mark.parametrize("value", ["1", "16", "31"])
    def test_floor_32(self, workdir, value):
        """A request below 32 MiB becomes 32 MiB."""
        assert build(workdir, JobVMMemory=value).memory_mib == MIN_MEMORY_MIB == 32

    def test_32_kept(self, workdir):
        """32 MiB itself is kept."""
        assert build(workdir, JobVMMemory="32").memory_mib == 32


class TestVcpus:
    @pytest.mark.parametrize(
        "attrs,expected",
        [
            ({"JobVM_VCPUS": "4"}, 4),
            ({"JobVM_VCPUS": "2", "RequestCpus": "8"}, 2),
            ({"RequestCpus": "3"}, 3),
            ({}, 1),
            ({"JobVM_VCPUS": "0"}, 1),
            ({"JobVM_VCPUS": "-2"}, 1),
            ({"RequestCpus": "0"}, 1),
            ({"JobVM_VCPUS": "2.9"}, 2),
        ],
    )
    def test_vcpus(self, workdir, attrs, expected):
        """vCPUs come from JobVM_VCPUS, then RequestCpus, then 1, and are at least 1."""
        assert build(workdir, **attrs).vcpus == expected


class TestNetworking:
    def test_mismatched_networking(self, workdir):
        """The job wants networking but it is off on this host: MISMATCHED_NETWORKING."""
        assert token_of(workdir, JobVMNetworking="true") == tokens.JOBCLASSAD_MISMATCHED_NETWORKING

    def test_mismatched_networking_type(self, workdir):
        """The job's type is not offered: MISMATCHED_NETWORKING_TYPE."""
        plan = NetworkPlan(("nat",), "nat")
        token = token_of(workdir, network=plan, JobVMNetworking="true", JobVMNetworkingType='"bridge"')
        assert token == tokens.JOBCLASSAD_MISMATCHED_NETWORKING_TYPE

    def test_default_type(self, workdir):
        """Without JobVMNetworkingType the resolved default type is used."""
        plan = NetworkPlan(("nat", "bridge"), "bridge")
        settings = Settings(vm_memory=1024, bridge_interface="br0")
        job = build(workdir, settings=settings, network=plan, JobVMNetworking="true")
        assert job.networking_type == "bridge"
        assert job.bridge_interface == "br0"

    def test_type_trimmed_and_lowered(self, workdir):
        """The job's networking type is trimmed and lower-cased; the MAC is read."""
        job = build(
            workdir,
            network=NAT_BRIDGE,
            JobVMNetworking="true",
            JobVMNetworkingType='" NAT "',
            JobVM_MACADDR='"52:54:00:12:34:56"',
        )
        assert (job.networking_type, job.mac, job.bridge_interface) == ("nat", "52:54:00:12:34:56", "")

    def test_networking_false_ignores_type(self, workdir):
        """With JobVMNetworking false there is no network, whatever type the job names."""
        job = build(workdir, network=NO_NET, JobVMNetworking="false", JobVMNetworkingType='"bridge"')
        assert job.networking_type == ""

    def test_networking_from_number(self, workdir):
        """JobVMNetworking = 1 counts as true."""
        assert token_of(workdir, JobVMNetworking="1") == tokens.JOBCLASSAD_MISMATCHED_NETWORKING


class TestNameAndVt:
    @pytest.mark.parametrize("missing", ["User", "ClusterId", "ProcId"])
    def test_critical_without_name_parts(self, workdir, missing):
        """Without User, ClusterId or ProcId the VM name cannot be built: CRITICAL."""
        assert token_of(workdir, **{missing: None}) == tokens.CRITICAL

    def test_critical_with_string_cluster(self, workdir):
        """A non-integer ClusterId also makes the name impossible: CRITICAL."""
        assert token_of(workdir, ClusterId='"x"') == tokens.CRITICAL

    def test_hardware_vt_mismatch(self, workdir):
        """The job needs hardware VT but VM_HARDWARE_VT is off: MISMATCHED_HARDWARE_VT."""
        assert token_of(workdir, JobVMHardwareVT="true") == tokens.JOBCLASSAD_MISMATCHED_HARDWARE_VT

    def test_hardware_vt_ok(self, workdir):
        """With VM_HARDWARE_VT on, a job needing it passes."""
        job = build(workdir, settings=Settings(vm_memory=1024, hardware_vt=True), JobVMHardwareVT="true")
        assert job.hardware_vt is True


class TestDisks:
    def test_missing_disk(self, workdir):
        """No VMPARAM_vm_Disk: KVM_NO_DISK_PARAM."""
        assert token_of(workdir, VMPARAM_vm_Disk=None) == tokens.KVM_NO_DISK_PARAM

    @pytest.mark.parametrize("value", ['""', '"   "'])
    def test_empty_disk(self, workdir, value):
        """An empty or blank VMPARAM_vm_Disk counts as missing: KVM_NO_DISK_PARAM."""
        assert token_of(workdir, VMPARAM_vm_Disk=value) == tokens.KVM_NO_DISK_PARAM

    @pytest.mark.parametrize(
        "disk",
        [
            "a.img:vda",  # 2 fields
            "a.img::w",  # 2 fields once empty ones are skipped
            "a.img:vda:w:raw:extra",  # 5 fields
            "b.img:vda:w",  # relative and not transferred
            "sub/b.img:vda:r",  # relative path, not transferred
            "/nonexistent/dir/x.img:vda:r",  # missing file
            "a.img:vda:w, /nonexistent/y.img:vdb:r",  # one bad item spoils the list
        ],
    )
    def test_invalid_disk(self, workdir, disk):
        """A malformed, relative non-transferred or missing disk: KVM_INVALID_DISK_PARAM."""
        assert token_of(workdir, VMPARAM_vm_Disk=f'"{disk}"') == tokens.KVM_INVALID_DISK_PARAM

    def test_trailing_colon_valid(self, workdir):
        """'a.img:vda:w:' has 3 fields after skipping the empty one and is valid."""
        job = build(workdir, VMPARAM_vm_Disk='"a.img:vda:w:"')
        assert [(d.device, d.permission, d.format) for d in job.disks] == [("vda", "w", "")]

    def test_fields_lowered_and_trimmed(self, workdir, shared):
        """Device and format are trimmed and lower-cased; the permission is kept as given."""
        job = build(workdir, VMPARAM_vm_Disk=f'" a.img : VDA : RW : QCOW2 , {shared}/base.img:HDB:r "')
        assert [(d.path, d.device, d.permission, d.format, d.transferred) for d in job.disks] == [
            (str(workdir / "a.img"), "vda", "RW", "qcow2", True),
            (str(shared / "base.img"), "hdb", "r", "", False),
        ]
        assert job.disks[0].writable is True
        assert job.disks[1].writable is False
        assert job.has_transferred_disk is True

    def test_empty_items_skipped(self, workdir):
        """Empty comma items are skipped."""
        job = build(workdir, VMPARAM_vm_Disk='",a.img:vda:w,,"')
        assert len(job.disks) == 1

    def test_transferred_by_basename(self, workdir):
        """A path whose basename is in the working dir uses the transferred copy."""
        job = build(workdir, VMPARAM_vm_Disk='"/submit/host/path/a.img:vda:w"')
        assert (job.disks[0].path, job.disks[0].transferred) == (str(workdir / "a.img"), True)

    def test_absolute_not_transferred(self, workdir, shared):
        """An absolute path not in the working dir is used as is and is not transferred."""
        job = build(workdir, VMPARAM_vm_Disk=f'"{shared}/base.img:vda:w"')
        assert (job.disks[0].path, job.disks[0].transferred) == (str(shared / "base.img"), False)
        assert job.has_transferred_disk is False

    def test_iso_by_extension(self, workdir, shared):
        """A .iso file is a CD-ROM; a path merely containing '.iso' is not."""
        job = build(workdir, VMPARAM_vm_Disk=f'"{shared}/boot.iso:hdc:r, {shared}/my.isotope.img:vdb:r"')
        assert [d.is_cdrom for d in job.disks] == [True, False]

    def test_iso_directory_not_cdrom(self, workdir, tmp_path):
        """A disk in a directory named like an ISO is not a CD-ROM."""
        odd = tmp_path / "images.iso.d"
        odd.mkdir()
        (odd / "disk.img").write_bytes(b"\0")
        job = build(workdir, VMPARAM_vm_Disk=f'"{odd}/disk.img:vda:r"')
        assert job.disks[0].is_cdrom is False

    def test_checkpoint_with_transferred_disk(self, workdir):
        """Checkpointing with a transferred disk: KVM_MISMATCHED_CHECKPOINT."""
        assert token_of(workdir, JobVMCheckpoint="true") == tokens.KVM_MISMATCHED_CHECKPOINT

    def test_checkpoint_with_shared_disks(self, workdir, shared):
        """Checkpointing with only shared-filesystem disks is accepted."""
        job = build(
            workdir,
            JobVMCheckpoint="true",
            VMPARAM_No_Output_VM="true",
            JobVMVNCConsole="true",
            VMPARAM_vm_Disk=f'"{shared}/base.img:vda:w"',
        )
        assert (job.checkpoint, job.no_output_vm, job.vnc_console) == (True, True, True)

    def test_read_permission_on_missing_transfer(self, workdir):
        """A transferred file that vanished is not found and is invalid."""
        (workdir / "a.img").unlink()
        assert token_of(workdir) == tokens.KVM_INVALID_DISK_PARAM


class TestKvmOrder:
    """The first failing check decides the token (spec 4.3)."""

    def test_memory_before_disk(self, workdir):
        """An ad failing memory and disk gets the memory token."""
        assert token_of(workdir, JobVMMemory="5000", VMPARAM_vm_Disk=None) == tokens.JOBCLASSAD_TOO_MUCH_MEMORY_REQUEST

    def test_memory_before_networking(self, workdir):
        """Memory is checked before networking."""
        assert token_of(workdir, JobVMMemory=None, JobVMNetworking="true") == tokens.JOBCLASSAD_NO_VM_MEMORY_PARAM

    def test_networking_before_name(self, workdir):
        """Networking is checked before the VM name."""
        assert token_of(workdir, JobVMNetworking="true", User=None) == tokens.JOBCLASSAD_MISMATCHED_NETWORKING

    def test_networking_type_before_name(self, workdir):
        """The networking type is checked before the VM name."""
        plan = NetworkPlan(("nat",), "nat")
        token = token_of(workdir, network=plan, JobVMNetworking="true", JobVMNetworkingType='"user"', User=None)
        assert token == tokens.JOBCLASSAD_MISMATCHED_NETWORKING_TYPE

    def test_name_before_hardware_vt(self, workdir):
        """The VM name is checked before hardware VT."""
        assert token_of(workdir, ProcId=None, JobVMHardwareVT="true") == tokens.CRITICAL

    def test_hardware_vt_before_disk(self, workdir):
        """Hardware VT is checked before the disks."""
        token = token_of(workdir, JobVMHardwareVT="true", VMPARAM_vm_Disk=None)
        assert token == tokens.JOBCLASSAD_MISMATCHED_HARDWARE_VT

    def test_invalid_disk_before_checkpoint(self, workdir):
        """An invalid disk list is reported before a checkpoint mismatch."""
        token = token_of(workdir, JobVMCheckpoint="true", VMPARAM_vm_Disk='"a.img:vda:w, /nope/b.img:vdb:r"')
        assert token == tokens.KVM_INVALID_DISK_PARAM

    def test_kvm_ignores_xen_attributes(self, workdir):
        """A KVM job is not subject to the Xen kernel checks."""
        job = build(workdir, VMPARAM_Xen_Kernel='"/nonexistent/kernel"')
        assert job.extras is None


# =========================================================================== build_job: Xen
XEN_BOOT = settings(XEN_BOOTLOADER="/usr/bin/pygrub")
XEN_VT = Settings(vm_memory=1024, hardware_vt=True)


class TestXen:
    def test_included_with_bootloader(self, workdir):
        """xen_kernel = included uses the configured XEN_BOOTLOADER."""
        job = build(workdir, "xen", settings=XEN_BOOT)
        assert job.vm_type == "xen"
        assert (job.extras.mode, job.extras.bootloader) == ("included", "/usr/bin/pygrub")

    def test_no_kernel_param(self, workdir):
        """No VMPARAM_Xen_Kernel: XEN_NO_KERNEL_PARAM."""
        assert token_of(workdir, "xen", settings=XEN_BOOT, VMPARAM_Xen_Kernel=None) == tokens.XEN_NO_KERNEL_PARAM

    def test_included_without_bootloader(self, workdir):
        """xen_kernel = included without XEN_BOOTLOADER: CRITICAL."""
        assert token_of(workdir, "xen", settings=SETTINGS) == tokens.CRITICAL

    def test_vmx_without_hardware_vt(self, workdir):
        """xen_kernel = vmx without JobVMHardwareVT: MISMATCHED_HARDWARE_VT."""
        token = token_of(workdir, "xen", settings=XEN_VT, VMPARAM_Xen_Kernel='"vmx"')
        assert token == tokens.JOBCLASSAD_MISMATCHED_HARDWARE_VT

    def test_vmx_with_hardware_vt(self, workdir):
        """xen_kernel = vmx with JobVMHardwareVT (and VM_HARDWARE_VT) is accepted."""
        job = build(workdir, "xen", settings=XEN_VT, VMPARAM_Xen_Kernel='"VMX"', JobVMHardwareVT="true")
        assert job.extras.mode == "vmx"

    def test_kernel_path(self, workdir, shared):
        """A kernel path with initrd, root and params is accepted and recorded."""
        job = build(
            workdir,
            "xen",
            VMPARAM_Xen_Kernel=f'"{shared}/kernel-5.10"',
            VMPARAM_Xen_Initrd=f'"{shared}/initrd-5.10"',
            VMPARAM_Xen_Root='"/dev/xvda1"',
            VMPARAM_Xen_Kernel_Params='"console=hvc0"',
        )
        xen = job.extras
        assert (xen.mode, xen.kernel, xen.initrd, xen.root, xen.kernel_params) == (
            "kernel",
            str(shared / "kernel-5.10"),
            str(shared / "initrd-5.10"),
            "/dev/xvda1",
            "console=hvc0",
        )

    def test_transferred_kernel_and_initrd(self, workdir):
        """Transferred kernel and initrd files (named as the job transferred them) are used
        from the working dir."""
        job = build(
            workdir,
            "xen",
            VMPARAM_Xen_Kernel='"vmlinuz"',
            VMPARAM_Xen_Initrd='"initrd.img"',
            VMPARAM_Xen_Root='"/dev/xvda"',
        )
        assert (job.extras.kernel, job.extras.initrd) == (str(workdir / "vmlinuz"), str(workdir / "initrd.img"))

    def test_submit_side_path_not_found_here(self, workdir):
        """A kernel path that does not exist on this machine fails even when a file of
        that name was transferred (the path is checked as written, spec 4.3)."""
        token = token_of(workdir, "xen", VMPARAM_Xen_Kernel='"/submit/vmlinuz"', VMPARAM_Xen_Root='"/dev/xvda"')
        assert token == tokens.XEN_KERNEL_NOT_FOUND

    def test_kernel_not_found(self, workdir):
        """An unreadable kernel path: XEN_KERNEL_NOT_FOUND."""
        token = token_of(workdir, "xen", VMPARAM_Xen_Kernel='"/nonexistent/kernel"', VMPARAM_Xen_Root='"/dev/xvda"')
        assert token == tokens.XEN_KERNEL_NOT_FOUND

    def test_initrd_not_found(self, workdir, shared):
        """An unreadable initrd: XEN_INITRD_NOT_FOUND."""
        token = token_of(
            workdir,
            "xen",
            VMPARAM_Xen_Kernel=f'"{shared}/kernel-5.10"',
            VMPARAM_Xen_Initrd='"/nonexistent/initrd"',
            VMPARAM_Xen_Root='"/dev/xvda"',
        )
        assert token == tokens.XEN_INITRD_NOT_FOUND

    def test_no_root(self, workdir, shared):
        """A kernel path without VMPARAM_Xen_Root: XEN_NO_ROOT_DEVICE_PARAM."""
        token = token_of(workdir, "xen", VMPARAM_Xen_Kernel=f'"{shared}/kernel-5.10"')
        assert token == tokens.XEN_NO_ROOT_DEVICE_PARAM

    def test_no_disk(self, workdir):
        """No disk for Xen: XEN_NO_DISK_PARAM."""
        assert token_of(workdir, "xen", settings=XEN_BOOT, VMPARAM_vm_Disk=None) == tokens.XEN_NO_DISK_PARAM

    def test_invalid_disk(self, workdir):
        """An invalid Xen disk list: XEN_INVALID_DISK_PARAM."""
        token = token_of(workdir, "xen", settings=XEN_BOOT, VMPARAM_vm_Disk='"a.img:xvda"')
        assert token == tokens.XEN_INVALID_DISK_PARAM

    def test_mismatched_checkpoint(self, workdir):
        """Checkpointing with a transferred Xen disk: XEN_MISMATCHED_CHECKPOINT."""
        token = token_of(workdir, "xen", settings=XEN_BOOT, JobVMCheckpoint="true")
        assert token == tokens.XEN_MISMATCHED_CHECKPOINT

    def test_memory_before_kernel(self, workdir):
        """The common memory check runs before the Xen kernel checks."""
        token = token_of(workdir, "xen", settings=XEN_BOOT, JobVMMemory="0", VMPARAM_Xen_Kernel=None)
        assert token == tokens.JOBCLASSAD_TOO_MUCH_MEMORY_REQUEST

    def test_kernel_before_disk(self, workdir):
        """The kernel is checked before the disks."""
        token = token_of(workdir, "xen", settings=XEN_BOOT, VMPARAM_Xen_Kernel=None, VMPARAM_vm_Disk=None)
        assert token == tokens.XEN_NO_KERNEL_PARAM

    def test_kernel_not_found_before_root(self, workdir):
        """A missing kernel is reported before a missing root device."""
        assert token_of(workdir, "xen", VMPARAM_Xen_Kernel='"/nonexistent/k"') == tokens.XEN_KERNEL_NOT_FOUND

    def test_root_before_disk(self, workdir, shared):
        """A missing root device is reported before a missing disk."""
        token = token_of(workdir, "xen", VMPARAM_Xen_Kernel=f'"{shared}/kernel-5.10"', VMPARAM_vm_Disk=None)
        assert token == tokens.XEN_NO_ROOT_DEVICE_PARAM

    def test_memory_floor_xen(self, workdir):
        """The 32 MiB floor applies to Xen as well."""
        assert build(workdir, "xen", settings=XEN_BOOT, JobVMMemory="8").memory_mib == 32


# =========================================================================== access
UID = 1000  # exists on this host (cloudsdk); any uid works for the mode-bit checks
GID = 1000
OTHER_GID = 54321
USER = JobUser(UID, GID)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@pytest.fixture
def public_dir():
    """A fresh world-searchable directory under /tmp (pytest's tmp_path is 0700, unusable for uid 1000)."""
    path = Path(tempfile.mkdtemp(prefix="vmgahp-access-", dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make(path: Path, uid: int, gid: int, mode: int) -> str:
    path.write_bytes(b"x")
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return str(path)


@needs_root
class TestCanAccess:
    @pytest.mark.parametrize(
        "mode,read,write",
        [(0o600, True, True), (0o400, True, False), (0o200, False, False), (0o000, False, False),
         (0o066, False, False)],
    )
    def test_owner_bits(self, public_dir, mode, read, write):
        """For the file's owner only the owner bits count, even when group/other bits would allow."""
        f = make(public_dir / "f", UID, OTHER_GID, mode)
        assert can_access(f, USER) is read
        assert can_access(f, USER, write=True) is write

    @pytest.mark.parametrize(
        "mode,read,write",
        [(0o060, True, True), (0o040, True, False), (0o606, False, False), (0o000, False, False)],
    )
    def test_group_bits(self, public_dir, mode, read, write):
        """For a member of the file's group only the group bits count."""
        f = make(public_dir / "f", 0, GID, mode)
        assert can_access(f, USER) is read
        assert can_access(f, USER, write=True) is write

    @pytest.mark.parametrize(
        "mode,read,write",
        [(0o006, True, True), (0o004, True, False), (0o660, False, False), (0o002, False, False)],
    )
    def test_other_bits(self, public_dir, mode, read, write):
        """For anybody else only the other bits count."""
        f = make(public_dir / "f", 0, OTHER_GID, mode)
        assert can_access(f, USER) is read
        assert can_access(f, USER, write=True) is write

    def test_group_from_job_gid(self, public_dir):
        """The job's GID (not only the passwd groups) grants group access."""
        f = make(public_dir / "f", 0, OTHER_GID, 0o040)
        assert can_access(f, JobUser(UID, OTHER_GID)) is True
        assert can_access(f, USER) is False

    def test_non_searchable_parent(self, public_dir):
        """A readable file under a directory the user cannot search is not accessible."""
        locked = public_dir / "locked"
        locked.mkdir()
        f = make(locked / "disk.img", UID, GID, 0o644)
        os.chmod(locked, 0o700)  # root-owned, no x for others
        assert can_access(f, USER) is False
        os.chmod(locked, 0o711)  # search only: enough
        assert can_access(f, USER) is True
        os.chmod(locked, 0o744)  # read but no search: not enough
        assert can_access(f, USER) is False

    def test_missing_file(self, public_dir):
        """A file that does not exist is not accessible."""
        assert can_access(str(public_dir / "nope.img"), USER) is False
        assert can_access(str(public_dir / "nope" / "x.img"), USER) is False

    def test_directory_is_not_a_file(self, public_dir):
        """A directory is never an accessible disk file."""
        assert can_access(str(public_dir), USER) is False

    def test_no_user_uses_process_access(self, public_dir):
        """Without a job user the process's own access() decides (root reads a 0000 file)."""
        f = make(public_dir / "f", UID, GID, 0o000)
        assert can_access(f, None) is True
        assert can_access(str(public_dir / "missing"), None) is False

    def test_build_job_checks_as_job_user(self, public_dir, workdir):
        """build_job checks disk access as the job user: a root-only disk is invalid for uid 1000."""
        private = make(public_dir / "root.img", 0, 0, 0o600)
        readable = make(public_dir / "pub.img", 0, 0, 0o644)
        token = token_of(workdir, user=USER, VMPARAM_vm_Disk=f'"{private}:vda:r"')
        assert token == tokens.KVM_INVALID_DISK_PARAM
        token = token_of(workdir, user=USER, VMPARAM_vm_Disk=f'"{readable}:vda:w"')
        assert token == tokens.KVM_INVALID_DISK_PARAM
        assert build(workdir, user=USER, VMPARAM_vm_Disk=f'"{readable}:vda:r"').disks[0].path == readable


class TestJobUserFromEnv:
    @pytest.mark.parametrize("env", [{}, {"VMGAHP_USER_UID": ""}, {"VMGAHP_USER_UID": "abc"}, {"VMGAHP_USER_UID": "0"},
                                     {"VMGAHP_USER_UID": "-5"}, {"VMGAHP_USER_UID": "  "}])
    def test_not_set(self, env):
        """An unset, empty, non-numeric or non-positive VMGAHP_USER_UID counts as not set."""
        assert job_user_from_env(env) is None

    def test_uid_only(self):
        """Without VMGAHP_USER_GID the GID defaults to the UID."""
        assert job_user_from_env({"VMGAHP_USER_UID": "1000"}) == JobUser(1000, 1000)

    def test_uid_and_gid(self):
        """A positive VMGAHP_USER_GID is used as given."""
        assert job_user_from_env({"VMGAHP_USER_UID": "1000", "VMGAHP_USER_GID": "50"}) == JobUser(1000, 50)

    @pytest.mark.parametrize("gid", ["", "0", "-1", "x"])
    def test_bad_gid_defaults_to_uid(self, gid):
        """A GID that is empty, zero, negative or non-numeric is replaced by the UID."""
        assert job_user_from_env({"VMGAHP_USER_UID": "1234", "VMGAHP_USER_GID": gid}) == JobUser(1234, 1234)


# =========================================================================== hostile paths
@pytest.mark.skipif(os.geteuid() != 0, reason="files of another user need root")
class TestHostilePaths:
    """Paths the job user could not open itself - reached through a symlink in the
    working dir or through ``..`` - are refused with the right token (issue 7)."""

    USER = JobUser(1000, 1000)

    @pytest.fixture
    def tmp_path(self) -> Path:
        """Everything under a directory the job user can reach (pytest's own is 0700)."""
        top = Path(tempfile.mkdtemp(prefix="vmgahp-hostile-", dir="/tmp"))
        os.chmod(top, 0o755)
        yield top
        shutil.rmtree(top)

    @pytest.fixture
    def workdir(self, tmp_path: Path) -> Path:
        wd = tmp_path / "scratch"
        wd.mkdir(mode=0o755)
        for name in ("a.img", "vmlinuz", "initrd.img"):
            (wd / name).write_bytes(b"\0" * 16)
            os.chmod(wd / name, 0o666)
        return wd

    @pytest.fixture
    def private(self, tmp_path: Path) -> Path:
        """A root-only directory (0700) holding world-readable/writable files."""
        directory = tmp_path / "private"
        directory.mkdir(mode=0o700)
        for name in ("secret.img", "vmlinuz-secret", "notes.txt"):
            (directory / name).write_bytes(b"\0" * 16)
            os.chmod(directory / name, 0o666)
        return directory

    @pytest.fixture
    def public(self, tmp_path: Path) -> Path:
        directory = tmp_path / "public"
        directory.mkdir(mode=0o755)
        (directory / "ok.img").write_bytes(b"\0" * 16)
        os.chmod(directory / "ok.img", 0o666)
        return directory

    def test_disk_symlink_into_a_private_dir(self, workdir, private):
        os.symlink(private / "secret.img", workdir / "linked.img")
        token = token_of(workdir, user=self.USER, VMPARAM_vm_Disk='"linked.img:vda:w"')
        assert token == tokens.KVM_INVALID_DISK_PARAM

    def test_disk_path_with_dotdot_into_a_private_dir(self, workdir, private):
        sneaky = f"{workdir}/../{private.name}/secret.img"
        token = token_of(workdir, user=self.USER, VMPARAM_vm_Disk=f'"{sneaky}:vda:r"')
        assert token == tokens.KVM_INVALID_DISK_PARAM

    def test_dotdot_through_a_symlinked_directory(self, workdir, private, tmp_path):
        """``link/..`` is not the lexical parent: realpath resolves it the way the kernel will."""
        (tmp_path / "public-dir").mkdir()
        os.symlink(private, workdir / "door")
        token = token_of(workdir, user=self.USER, VMPARAM_vm_Disk=f'"{workdir}/door/secret.img:vda:r"')
        assert token == tokens.KVM_INVALID_DISK_PARAM

    def test_symlink_to_a_readable_file_is_fine(self, workdir, public):
        os.symlink(public / "ok.img", workdir / "linked.img")
        job = build(workdir, user=self.USER, VMPARAM_vm_Disk='"linked.img:vda:w"')
        assert job.disks[0].path == str(workdir / "linked.img")

    def test_xen_kernel_symlink_into_a_private_dir(self, workdir, private):
        os.symlink(private / "vmlinuz-secret", workdir / "vmlinuz-link")
        token = token_of(workdir, "xen", user=self.USER, VMPARAM_Xen_Kernel='"vmlinuz-link"',
                         VMPARAM_Xen_Root='"/dev/xvda1"')
        assert token == tokens.XEN_KERNEL_NOT_FOUND

    def test_cdrom_file_symlink_into_a_private_dir(self, workdir, private):
        os.symlink(private / "notes.txt", workdir / "notes.txt")
        token = token_of(workdir, user=self.USER, VMPARAM_CDROM_Files='"notes.txt"')
        assert token == tokens.CANNOT_READ_CDROM_FILE

    def test_cdrom_directory_through_dotdot(self, workdir, private):
        token = token_of(workdir, user=self.USER, VMPARAM_CDROM_Files=f'"{workdir}/../{private.name}"')
        assert token == tokens.CANNOT_READ_CDROM_FILE
