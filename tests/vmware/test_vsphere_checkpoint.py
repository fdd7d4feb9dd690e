"""Checkpoint files: a suspended VM's state downloaded, and restored into a new folder.

vcsim's suspend only changes ``runtime.powerState``: it writes no .vmss/.vmem and no
disk contents. The suspend files are therefore put into the datastore folder by the
test, as a host would have written them, and the tests check what the client picks,
that the bytes arrive intact and where the restore puts them - not that a guest
resumes from them.
"""

from __future__ import annotations

import os

import pytest

from vmgahp.drivers.vmware.errors import InvalidState
from vmgahp.drivers.vmware.specs import VmSpec
from vmgahp.drivers.vmware.vsphere import POWERED_ON, SUSPENDED

pytestmark = pytest.mark.vcsim


def _suspended_job(job):
    base = job.put("base.vmdk", b"# Disk DescriptorFile\nbase\n")
    job.put("base-flat.vmdk", b"\x01" * 4096)
    vm = job.register()
    [child] = job.client.reconfigure(job.where, vm, VmSpec(memory_mb=256, base_disks=[job.where.ds_path(base)]))
    job.client.power_on(vm)
    return vm, child


def test_vcsim_writes_no_suspend_files(job):
    """What the README says vcsim cannot prove: if this starts failing, update it."""
    vm, _ = _suspended_job(job)
    before = sorted(p.name for p in job.dir.iterdir())
    job.client.suspend(vm)
    assert job.client.power_state(vm) == SUSPENDED
    assert sorted(p.name for p in job.dir.iterdir()) == before
    assert not [n for n in before if n.endswith((".vmss", ".vmem"))]


def test_save_state_takes_state_files_and_child_disks_only(job, tmp_path):
    vm, child = _suspended_job(job)
    job.client.suspend(vm)
    # What a host would have written on suspend, and the child disk's extent.
    state = {f"{vm.name}.vmss": os.urandom(70000), f"{vm.name}.vmem": os.urandom(1 << 20), "job.vmsd": b""}
    for name, data in state.items():
        (job.dir / name).write_bytes(data)
    (job.dir / "base-vmgahp-flat.vmdk").write_bytes(b"\x02" * 4096)  # what the guest wrote
    (job.dir / "vmware-1.log").write_bytes(b"old log")
    (job.dir / "job.vmx.lck").write_bytes(b"")

    saved = job.client.save_state(job.where, vm, tmp_path / "ckpt")
    names = sorted(p.name for p in saved)
    assert names == sorted(["job.vmx", f"{vm.name}.nvram", "base-vmgahp.vmdk", "base-vmgahp-flat.vmdk", *state])
    assert child.endswith("/base-vmgahp.vmdk")
    for path in saved:  # byte for byte what the datastore holds
        assert path.read_bytes() == (job.dir / path.name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == names  # no temporaries


def test_save_state_of_a_running_vm_is_refused(job, tmp_path):
    vm, _ = _suspended_job(job)
    with pytest.raises(InvalidState, match="suspend it first"):
        job.client.save_state(job.where, vm, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def test_restore_uploads_registers_and_powers_on(job, tmp_path):
    vm, _ = _suspended_job(job)
    job.client.suspend(vm)
    (job.dir / f"{vm.name}.vmss").write_bytes(b"suspend state")
    ckpt = tmp_path / "ckpt"
    job.client.save_state(job.where, vm, ckpt)
    job.client.power_off(vm)
    job.client.unregister(vm)

    # vcsim needs "<VM name>.nvram" and vmware.log beside the VMX to register (a host
    # would make them); the restored VM gets a new name, so the test adds both.
    restored_name = f"{vm.name}-restored"
    (ckpt / f"{restored_name}.nvram").write_bytes((ckpt / f"{vm.name}.nvram").read_bytes())
    (ckpt / "vmware.log").write_bytes(b"")
    folder = f"{job.folder}/restart-1"
    restored = job.client.restore(job.where, ckpt, folder, "job.vmx", restored_name)
    assert restored.vmx == f"[LocalDS_0] {folder}/job.vmx"
    assert job.client.power_state(restored) == POWERED_ON
    for path in ckpt.iterdir():
        if path.name != "vmware.log":  # vcsim appends to it
            assert (job.dir / "restart-1" / path.name).read_bytes() == path.read_bytes()
    assert job.client.find_vm(job.where, f"{folder}/job.vmx").moid == restored.moid


def test_restore_without_the_vmx_is_refused_before_uploading(job, tmp_path):
    (tmp_path / "x.nvram").write_bytes(b"")
    with pytest.raises(Exception, match="job.vmx is not in"):
        job.client.restore(job.where, tmp_path, f"{job.folder}/r", "job.vmx", "r")
    assert not (job.dir / "r").exists()
