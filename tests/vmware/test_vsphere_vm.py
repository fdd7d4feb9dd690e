"""Register, reconfigure and power a VM on vcsim; every setting read back from the server.

vcsim keeps the configuration it was sent (it runs no guest): these tests prove what
the client sent and that the server accepted it, not that a guest would boot.
"""

from __future__ import annotations

import pytest

from vmgahp.drivers.vmware.errors import AlreadyExists, InvalidState, NotFound
from vmgahp.drivers.vmware.specs import VmSpec, child_disk_path
from vmgahp.drivers.vmware.vsphere import POWERED_OFF, POWERED_ON, SUSPENDED

vim = pytest.importorskip("pyVmomi").vim  # the vmware extra; without it these tests skip

pytestmark = pytest.mark.vcsim

MAC = "00:50:56:3a:bc:de"
BASE = b"# Disk DescriptorFile\nversion=1\nparentCID=ffffffff\n"


def _job_vm(job, **spec):
    base = job.put("base.vmdk", BASE)
    job.put("base-flat.vmdk", b"\xaa" * 8192)
    iso = job.put("job.iso", b"CD001 ISO")
    vm = job.register()
    full = VmSpec(memory_mb=768, cpus=3, network="VM Network", mac=MAC, iso=job.where.ds_path(iso),
                  extra_config={"guestinfo.vmgahp.job": "42", "vmgahp.note": "x y"},
                  base_disks=[job.where.ds_path(base)])  # fmt: skip
    children = job.client.reconfigure(job.where, vm, VmSpec(**{**full.__dict__, **spec}))
    return vm, children


def test_register_then_every_setting_reads_back(job):
    vm, children = _job_vm(job)
    assert vm.vmx == f"[LocalDS_0] {job.folder}/job.vmx"
    assert vm.folder == f"[LocalDS_0] {job.folder}"
    assert job.client.find_vm(job.where, f"{job.folder}/job.vmx").moid == vm.moid

    got = job.client.settings(vm)
    assert (got.memory_mb, got.cpus) == (768, 3)
    [nic] = got.nics
    assert (nic.mac, nic.address_type, nic.network, nic.kind) == (MAC, "manual", "VM Network", "VirtualE1000e")
    assert got.isos == (f"[LocalDS_0] {job.folder}/job.iso",)
    base = f"[LocalDS_0] {job.folder}/base.vmdk"
    child = f"[LocalDS_0] {job.folder}/base-vmgahp.vmdk"
    assert children == [child] == [child_disk_path(vm.folder, base)]
    [disk] = got.disks
    assert (disk.file, disk.parent) == (child, base)
    controller = next(d for d in vm.obj.config.hardware.device if d.key == disk.controller_key)
    assert isinstance(controller, vim.vm.device.VirtualLsiLogicController)  # added: the VMX gave none
    assert got.extra_config["guestinfo.vmgahp.job"] == "42"
    assert got.extra_config["vmgahp.note"] == "x y"
    # vcsim made the child's files (fileOperation create) and left the base alone.
    assert (job.dir / "base-vmgahp.vmdk").exists()
    assert (job.dir / "base.vmdk").read_bytes() == BASE
    assert (job.dir / "base-flat.vmdk").read_bytes() == b"\xaa" * 8192


def test_second_reconfigure_edits_instead_of_adding(job):
    vm, _ = _job_vm(job)
    other_iso = job.put("other.iso", b"CD001 other")
    job.client.reconfigure(job.where, vm, VmSpec(network="DC0_DVPG0", mac="00:50:56:00:00:01",
                                                 iso=job.where.ds_path(other_iso), memory_mb=1024))  # fmt: skip
    got = job.client.settings(vm)
    [nic] = got.nics  # still one NIC, now on the distributed port group
    pg = next(n for n in job.where.datacenter.network if n.name == "DC0_DVPG0")
    assert (nic.mac, nic.address_type, nic.network) == ("00:50:56:00:00:01", "manual", pg.key)
    assert got.isos == (f"[LocalDS_0] {job.folder}/other.iso",)
    assert (got.memory_mb, got.cpus) == (1024, 3)
    assert len(got.disks) == 1  # no second child


def test_a_child_that_exists_already_is_refused(job):
    vm, _ = _job_vm(job)
    with pytest.raises(AlreadyExists):  # never "replace": that truncates a file
        job.client.reconfigure(job.where, vm, VmSpec(base_disks=[job.where.ds_path(f"{job.folder}/base.vmdk")]))


def test_spec_validation():
    with pytest.raises(ValueError, match="MAC"):
        VmSpec(mac="00:50:56:zz:00:00")
    with pytest.raises(ValueError, match="datastore path"):
        VmSpec(base_disks=["disk.vmdk"])
    with pytest.raises(ValueError, match="memory_mb"):
        VmSpec(memory_mb=0)


def test_unknown_port_group(job):
    vm = job.register()
    with pytest.raises(NotFound, match="no network named 'nope'"):
        job.client.reconfigure(job.where, vm, VmSpec(network="nope"))


def test_power_transitions(job):
    vm, _ = _job_vm(job)
    client = job.client
    assert client.power_state(vm) == POWERED_OFF
    with pytest.raises(InvalidState, match="not suspended"):
        client.resume(vm)  # from off that would be a cold boot
    client.power_on(vm)
    assert client.power_state(vm) == POWERED_ON
    with pytest.raises(InvalidState, match="InvalidPowerState"):
        client.power_on(vm)
    client.suspend(vm)
    assert client.power_state(vm) == SUSPENDED
    client.resume(vm)
    assert client.power_state(vm) == POWERED_ON
    with pytest.raises(InvalidState):
        client.unregister(vm)  # vcsim, like vSphere, refuses while it runs
    client.power_off(vm)
    assert client.wait_power_state(vm, POWERED_OFF, timeout=5) == POWERED_OFF
    assert client.session.open_collectors == set()


def test_unregister_keeps_every_file(job):
    vm, _ = _job_vm(job)
    before = sorted(p.name for p in job.dir.iterdir())
    job.client.unregister(vm)
    assert job.client.find_vm(job.where, f"{job.folder}/job.vmx") is None
    assert sorted(p.name for p in job.dir.iterdir()) == before
    with pytest.raises(NotFound):
        job.client.power_state(vm)


def test_status_ip_macs_and_quick_stats(job):
    # vcsim applies extraConfig keys "SET.<property>" to the VM (simulator/virtual_machine.go,
    # applyExtraConfig); guest.ipAddress needs VMware Tools on a real host.
    vm, _ = _job_vm(job, extra_config={"SET.guest.ipAddress": "192.0.2.17"})
    job.client.power_on(vm)
    status = job.client.status(vm)
    assert status.power_state == POWERED_ON
    assert status.ip == "192.0.2.17"
    assert status.macs == (MAC,)
    assert "SET.guest.ipAddress" not in job.client.settings(vm).extra_config  # consumed, not stored
    # vcsim reports zero quick stats: check only that they are what the server says.
    stats = vm.obj.summary.quickStats
    assert (status.cpu_mhz, status.guest_memory_mb) == (stats.overallCpuUsage or 0, stats.guestMemoryUsage or 0)


def test_register_on_esx_without_names(vcsim_esx, connect, tmp_path):
    client = connect(vcsim_esx)
    where = client.placement()
    folder = f"esx-{tmp_path.name[-8:]}"
    client.make_folder(where, folder)
    for name, data in [("job.vmx", b'config.version = "8"\n'), ("job.nvram", b""), ("vmware.log", b"")]:
        (tmp_path / name).write_bytes(data)
        client.upload(where, tmp_path / name, f"{folder}/{name}")
    vm = client.register(where, f"{folder}/job.vmx", "job")
    client.reconfigure(where, vm, VmSpec(memory_mb=256, network="VM Network"))
    client.power_on(vm)
    assert client.power_state(vm) == POWERED_ON
    assert client.settings(vm).memory_mb == 256
