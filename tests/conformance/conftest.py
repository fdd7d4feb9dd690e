"""One contract, every driver: the ``driver`` fixture of tests/conformance.

Each parameter of ``driver`` is a :class:`Rig` - a :class:`Hypervisor` plus
what the contract tests cannot know about it: how to make a job it can run
(disks it can open), a minimal job ad for its ``read_job``, which faults it can
be made to show, and how long a shutdown grace it needs. The tests
(test_contract.py) use only the contract of :mod:`vmgahp.drivers.base`.

* ``fake``: :class:`vmgahp.drivers.fake.FakeHypervisor`, in memory;
* ``libvirt-test``: :class:`LibvirtHypervisor` on libvirt's in-process
  ``test:///default`` (no daemon; it opens no disk image);
* ``libvirtd``: :class:`LibvirtHypervisor` on the real libvirtd
  (``qemu:///system``, ``VM_KVM_DOMAIN_TYPE = qemu``) with blank raw disks that
  SeaBIOS idles on - marked ``libvirtd``, so ``-m "not libvirtd"`` skips it;
* ``vmware``: :class:`VMwareHypervisor` on the session's vCenter simulator
  (tests/vcsim_fixture.py), its job a VM directory (``job.vmx``, a base disk,
  what vcsim wants beside the VMX) read by the driver's own ``read_job`` -
  marked ``vcsim``; skipped without pyVmomi.

Domain names are unique per test (test:///default, libvirtd and vcsim are shared
by the whole session) and every domain a test made is destroyed at teardown.

**Adding a driver** is one more entry in ``RIGS`` and one ``pytest.param`` in
``PARAMS``:

1. write ``def _mine(request, work) -> Rig``: get the host from a session
   fixture (star-imported in tests/conftest.py so that every folder sees it),
   build the Hypervisor from knobs naming it, and give ``provokes``, ``grace``
   and, for what the driver cannot do, ``cannot`` (what -> why). A driver whose
   jobs are not one raw ``disk.img`` overrides the job-making methods of
   :class:`Rig` (``job``, ``ad_lines``, ``minimal_disks``, ``inputs``, ``rehome``,
   ``foreign``), as :class:`VMwareRig` does;
2. add ``pytest.param("mine", marks=...)``;
3. run ``pytest tests/conformance -m <mark>``. A contract test that cannot apply
   is skipped through ``rig.require(...)`` with the reason, never deleted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import pytest

from fake_vm import blank_disk
from helpers import settings as settings_from_knobs
from vmgahp.drivers.base import Hypervisor
from vmgahp.job.model import Disk, VmJob

UNREACHABLE_URI = "qemu+unix:///system?socket=/nonexistent/vmgahp-conformance.sock"
FAULTS = frozenset({"missing_disk", "unreachable"})  # what ``provokes`` lists; a rig shows none unless told


@dataclass
class Rig:
    name: str
    hypervisor: Hypervisor
    work: Path
    make: Callable[..., Hypervisor]  # another of the same driver, with more knobs
    make_unreachable: Callable[[], Hypervisor]  # the same driver, its host unreachable
    provokes: frozenset[str] = frozenset()  # faults this driver can be made to show
    grace: float = 1.0  # a shutdown grace long enough for this hypervisor
    cannot: Mapping[str, str] = field(default_factory=dict)  # a feature this rig lacks -> why
    names: list[str] = field(default_factory=list)
    vm_type = "kvm"

    def require(self, what: str) -> None:
        """Skip unless this rig can show the fault ``what`` / has the feature ``what``."""
        if what in self.cannot:
            pytest.skip(f"{self.name}: {self.cannot[what]}")
        if what in FAULTS and what not in self.provokes:
            pytest.skip(f"{self.name} cannot be made to show {what!r}")

    def job(self, work: Path | None = None, **fields: Any) -> VmJob:
        """A job this driver can run, with one writable raw disk ``disk.img`` in ``work``."""
        work = work or self.work
        path = work / "disk.img"
        if not path.exists():
            with open(path, "wb") as handle:  # a blank disk: SeaBIOS finds nothing to boot and idles
                handle.truncate(1 << 20)
        values: dict[str, Any] = dict(
            vm_type="kvm", name=f"conformance_{uuid.uuid4().hex[:8]}_1.0", working_dir=str(work), memory_mib=64,
            disks=(Disk(path=str(path), device="vda", permission="w", format="raw", transferred=True),),
        )
        values.update(fields)
        self.names.append(values["name"])
        return VmJob(**values)

    def ad_lines(self, work: Path | None = None, **attributes: str) -> list[str]:
        """A minimal job ad for this driver's ``read_job``, its disk in ``work``."""
        work = work or self.work
        if not (work / "disk.img").exists():
            blank_disk(work)
        lines = [f'VM_WORKING_DIR = "{work}"', "ClusterId = 7", "ProcId = 0", 'User = "conformance"',
                 'JobVMType = "kvm"', "JobVMMemory = 64", 'VMPARAM_vm_Disk = "disk.img:vda:w:raw"']
        return lines + [f"{name} = {value}" for name, value in attributes.items()]

    def minimal_disks(self, work: Path) -> list[tuple[Path, str, bool, bool]]:
        """(path, device, writable, transferred) of the disks ``ad_lines`` gives."""
        return [(work / "disk.img", "vda", True, True)]

    def inputs(self, job: VmJob) -> set[str]:
        """The job's own files in its working directory (what a transfer brings)."""
        return {Path(d.path).name for d in job.disks}

    def rehome(self, job: VmJob, work: Path) -> VmJob:
        """``job`` after its files were moved to ``work`` (another execute node)."""
        disks = tuple(d.model_copy(update={"path": str(work / Path(d.path).name)}) for d in job.disks)
        return job.model_copy(update={"working_dir": str(work), "disks": disks})

    def foreign(self, job: VmJob) -> VmJob:
        """A job of the same name whose disks are not those of ``job``'s saved state."""
        elsewhere = job.disks[0].model_copy(update={"device": "vdb"})
        return job.model_copy(update={"disks": (elsewhere,)})

    def cleanup(self) -> None:
        for name in self.names:
            try:
                self.hypervisor.destroy_by_name(name)
            except Exception as exc:  # noqa: BLE001 - report, and go on with the others
                print(f"cleanup of {name} on {self.name} failed: {exc}")
        self.hypervisor.close()


def _fake(request: pytest.FixtureRequest, work: Path) -> Rig:
    from vmgahp.drivers.base import HostError
    from vmgahp.drivers.fake import FakeHypervisor

    def unreachable() -> Hypervisor:
        # The fake's stand-in for a host it cannot reach: every call fails so.
        hv = FakeHypervisor()
        for op in ("create", "restore", "lookup", "destroy_by_name", "network_plan"):
            hv.faults.fail(op, HostError("cannot connect to the fake host"))
        return hv

    def make(**knobs: str) -> Hypervisor:
        return FakeHypervisor(settings_from_knobs("kvm", **knobs), "kvm")

    return Rig("fake", make(), work, make, unreachable, provokes=frozenset({"missing_disk", "unreachable"}),
               grace=0.0)


def _libvirt(uri: str, work: Path, name: str, provokes: frozenset[str], grace: float) -> Rig:
    from vmgahp.drivers.libvirt.driver import LibvirtHypervisor

    def make(**knobs: str) -> Hypervisor:
        knobs = dict(dict(VM_KVM_LIBVIRT_URI=uri, VM_KVM_DOMAIN_TYPE="qemu"), **knobs)
        return LibvirtHypervisor(settings_from_knobs("kvm", **knobs), "kvm")

    hv = make()
    hv.check_host()
    return Rig(name, hv, work, make, lambda: make(VM_KVM_LIBVIRT_URI=UNREACHABLE_URI),
               provokes=provokes | {"unreachable"}, grace=grace)


def _libvirt_test(request: pytest.FixtureRequest, work: Path) -> Rig:
    # The test driver opens no image: a missing disk cannot be provoked.
    return _libvirt("test:///default", work, "libvirt-test", frozenset(), grace=1.0)


def _libvirtd(request: pytest.FixtureRequest, work: Path) -> Rig:
    daemon = request.getfixturevalue("libvirtd")
    # SeaBIOS ignores the power button: a shutdown always waits out its grace.
    return _libvirt(daemon.uri, work, "libvirtd", frozenset({"missing_disk"}), grace=1.0)


# The VMware job: a VM directory as a transferred vmware_dir brings it.
VMX = b'config.version = "8"\nvirtualHW.version = "13"\nguestOS = "otherlinux-64"\n'
BASE = b"# Disk DescriptorFile\nversion=1\nparentCID=ffffffff\n"
FLAT = bytes(range(256)) * 64
VCSIM_POOL = "DC0_H0/Resources"  # the vCenter model has two pools: one is named
CLOSED_PORT_URL = "https://127.0.0.1:1/sdk"  # nothing listens on port 1: connection refused at once


@dataclass
class VMwareRig(Rig):
    datastore: Path = Path("/nonexistent")  # the simulator's local directory behind the datastore
    vm_type = "vmware"

    @staticmethod
    def write_vm_dir(work: Path, vm_name: str, vmx: str = "job.vmx") -> None:
        # vcsim registers a VMX only with <VM name>.nvram and vmware.log beside it
        # (a real host makes them); files already there are never rewritten.
        for name, data in ((vmx, VMX), ("base.vmdk", BASE), ("base-flat.vmdk", FLAT),
                           (f"{vm_name}.nvram", b"NVRAM"), ("vmware.log", b"")):
            if not (work / name).exists():
                (work / name).write_bytes(data)

    def _lines(self, work: Path, vmx: str, snapshot: bool, attributes: dict[str, str]) -> list[str]:
        lines = [f'VM_WORKING_DIR = "{work}"', "ClusterId = 7", "ProcId = 0", 'User = "conformance"',
                 'JobVMType = "vmware"', "JobVMMemory = 64", "VMPARAM_VMware_Transfer = true",
                 f"VMPARAM_VMware_SnapshotDisk = {str(snapshot).lower()}", f'VMPARAM_VMware_VMX_File = "{vmx}"',
                 'VMPARAM_VMware_VMDK_Files = "base.vmdk,base-flat.vmdk"']
        return lines + [f"{name} = {value}" for name, value in attributes.items()]

    def job(self, work: Path | None = None, **fields: Any) -> VmJob:
        from vmgahp.job.jobad import JobAd

        work = work or self.work
        vmx = fields.pop("vmx", "job.vmx")
        snapshot = fields.pop("snapshot_disk", True)
        values: dict[str, Any] = dict(vm_type="vmware", name=f"conformance_{uuid.uuid4().hex[:8]}_1.0",
                                      working_dir=str(work), memory_mib=64)
        values.update(fields)
        self.write_vm_dir(work, values["name"], vmx)
        if values["name"] not in self.names:
            self.names.append(values["name"])
        # The driver's own read_job makes the disks and the upload list, as at START.
        return self.hypervisor.read_job(JobAd(self._lines(work, vmx, snapshot, {})), VmJob(**values), None)

    def ad_lines(self, work: Path | None = None, **attributes: str) -> list[str]:
        work = work or self.work
        user = attributes.get("User", '"conformance"').strip('"')
        self.write_vm_dir(work, f"{user}_7.0")  # the name build_job gives it
        return self._lines(work, "job.vmx", True, attributes)

    def minimal_disks(self, work: Path) -> list[tuple[Path, str, bool, bool]]:
        return [(work / "base.vmdk", "disk0", True, True)]  # the flat extent is uploaded, not a disk

    def inputs(self, job: VmJob) -> set[str]:
        return {Path(path).name for path in job.extras.uploads}

    def rehome(self, job: VmJob, work: Path) -> VmJob:
        return self.job(work, name=job.name, snapshot_disk=job.snapshot_disk)  # read again there, as at START

    def foreign(self, job: VmJob) -> VmJob:
        return self.job(Path(job.working_dir), name=job.name, vmx="other.vmx")

    def cleanup(self) -> None:
        super().cleanup()
        # Every folder vmgahp made for this test's VMs is gone from the datastore.
        left = [p.name for name in self.names for p in self.datastore.glob(f"vmgahp-{name}-*")]
        assert not left, f"left on the datastore: {left}"


def _vmware(request: pytest.FixtureRequest, work: Path) -> Rig:
    pytest.importorskip("pyVmomi", reason="pyVmomi is not installed (pip install 'vmgahp[vmware]')")
    from vmgahp.drivers.vmware.driver import VMwareHypervisor

    sim = request.getfixturevalue("vcsim")
    password = work.parent / "vcsim-password"
    password.write_text(sim.password + "\n")
    password.chmod(0o600)
    base = dict(VMWARE_VSPHERE_URL=sim.url, VMWARE_USER=sim.user, VMWARE_PASSWORD_FILE=str(password),
                VMWARE_CA_FILE=str(sim.ca_file), VMWARE_RESOURCE_POOL=VCSIM_POOL, VMWARE_CALL_TIMEOUT="30")

    def make(**knobs: str) -> Hypervisor:
        return VMwareHypervisor(settings_from_knobs("vmware", **dict(base, **knobs)), "vmware")

    hv = make()
    hv.check_host()
    rig = VMwareRig("vmware", hv, work, make, lambda: make(VMWARE_VSPHERE_URL=CLOSED_PORT_URL),
                    provokes=frozenset({"missing_disk", "unreachable"}), grace=5.0, cannot={
                        "pause": "vSphere has no pause (the driver declares no PAUSE; SOFT_SUSPEND suspends "
                                 "to the datastore)",
                        "local_overlays": "prepare makes no local layers: the child disks are made on the "
                                          "datastore at START and come back as output",
                        "lookup_asks_host": "lookup answers from the VMs this gahp started, without asking "
                                            "vCenter, so an unreachable host cannot fail it",
                    })
    rig.datastore = Path(hv.connection()[1].datastore.info.url)  # vcsim keeps the datastore in a local dir
    return rig


RIGS: dict[str, Callable[[pytest.FixtureRequest, Path], Rig]] = {
    "fake": _fake,
    "libvirt-test": _libvirt_test,
    "libvirtd": _libvirtd,
    "vmware": _vmware,
}
PARAMS = ["fake", "libvirt-test", pytest.param("libvirtd", marks=pytest.mark.libvirtd),
          pytest.param("vmware", marks=pytest.mark.vcsim)]


@pytest.fixture(params=PARAMS)
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Rig:
    work = tmp_path / "work"
    work.mkdir()
    rig = RIGS[request.param](request, work)
    yield rig
    rig.cleanup()
