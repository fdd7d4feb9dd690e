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
  SeaBIOS idles on - marked ``libvirtd``, so ``-m "not libvirtd"`` skips it.

Domain names are unique per test (test:///default and libvirtd are shared by
the whole session) and every domain a test made is destroyed at teardown.

**Adding a driver** (VMware on the vcsim simulator, say) is one more entry in
``RIGS`` and one ``pytest.param`` in ``PARAMS``:

1. write ``def _vmware(request, work) -> Rig``: get the simulator with
   ``request.getfixturevalue("vcsim")`` (make tests/vmware/vcsim_fixture.py's
   fixtures visible here first: star-import it in tests/conftest.py as
   libvirtd_fixture is), build the Hypervisor from knobs naming it, and give
   ``make_disk`` (a disk file the driver can use, in ``work``), ``ad_lines``,
   ``provokes`` and ``grace``;
2. add ``pytest.param("vmware", marks=pytest.mark.vcsim)``;
3. run ``pytest tests/conformance -m vcsim``. A contract test that cannot apply
   is skipped through ``rig.require(...)`` with the reason, never deleted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from fake_vm import blank_disk
from helpers import settings as settings_from_knobs
from vmgahp.drivers.base import Hypervisor
from vmgahp.job.model import Disk, VmJob

UNREACHABLE_URI = "qemu+unix:///system?socket=/nonexistent/vmgahp-conformance.sock"


@dataclass
class Rig:
    name: str
    hypervisor: Hypervisor
    work: Path
    make: Callable[..., Hypervisor]  # another of the same driver, with more knobs
    make_unreachable: Callable[[], Hypervisor]  # the same driver, its host unreachable
    provokes: frozenset[str] = frozenset()  # faults this driver can be made to show
    grace: float = 1.0  # a shutdown grace long enough for this hypervisor
    names: list[str] = field(default_factory=list)

    def require(self, fault: str) -> None:
        if fault not in self.provokes:
            pytest.skip(f"{self.name} cannot be made to show {fault!r}")

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


RIGS: dict[str, Callable[[pytest.FixtureRequest, Path], Rig]] = {
    "fake": _fake,
    "libvirt-test": _libvirt_test,
    "libvirtd": _libvirtd,
}
PARAMS = ["fake", "libvirt-test", pytest.param("libvirtd", marks=pytest.mark.libvirtd)]


@pytest.fixture(params=PARAMS)
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Rig:
    work = tmp_path / "work"
    work.mkdir()
    rig = RIGS[request.param](request, work)
    yield rig
    rig.cleanup()
