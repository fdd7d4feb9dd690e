"""Placement by name, and "the only one there is", on vcsim's vCenter and ESXi models."""

from __future__ import annotations

import uuid

import pytest

from vmgahp.drivers.vmware.errors import Ambiguous, NotFound
from vmgahp.drivers.vmware.placement import find_network
from vmgahp.drivers.vmware.transport import Deadline

vim = pytest.importorskip("pyVmomi").vim  # the vmware extra; without it these tests skip

pytestmark = pytest.mark.vcsim


def test_esx_has_one_of_everything(vcsim_esx, connect):
    where = connect(vcsim_esx).placement()
    assert where.dc_path == "ha-datacenter"
    assert where.datastore_name == "LocalDS_0"
    assert where.pool.name == "Resources" and where.host is None
    assert where.folder.name == "vm"
    assert where.ds_path("a/b.vmx") == "[LocalDS_0] a/b.vmx"


def test_vcenter_without_names_is_ambiguous_about_pools(vcsim, connect):
    with pytest.raises(Ambiguous) as several:
        connect(vcsim).placement()
    assert several.value.choices == ["DC0_C0/Resources", "DC0_H0/Resources"]
    assert "name one" in str(several.value)


def test_a_plain_pool_name_shared_by_two_is_ambiguous(vcsim, connect):
    with pytest.raises(Ambiguous, match="2 resource pools named 'Resources'"):
        connect(vcsim).placement(pool="Resources")


def test_pool_by_label(vcsim, connect):
    client = connect(vcsim)
    cluster = client.placement(pool="DC0_C0/Resources")
    standalone = client.placement(pool="DC0_H0/Resources")
    assert cluster.pool._moId != standalone.pool._moId
    assert cluster.pool.parent.name == "DC0_C0"
    assert standalone.pool.parent.name == "DC0_H0"


def test_host_implies_its_compute_resource_pool(vcsim, connect):
    where = connect(vcsim).placement(host="DC0_C0_H1")
    assert where.host.name == "DC0_C0_H1"
    assert where.pool.parent.name == "DC0_C0"  # the cluster's root pool


@pytest.mark.parametrize("names, kind", [
    ({"datacenter": "DC9"}, "datacenter"),
    ({"datastore": "nope", "pool": "DC0_H0/Resources"}, "datastore"),
    ({"host": "no-such-host"}, "host"),
    ({"pool": "no-such-pool"}, "resource pool"),
    ({"folder": "no-such-folder", "pool": "DC0_H0/Resources"}, "VM folder"),
])  # fmt: skip
def test_unknown_names(vcsim, connect, names, kind):
    with pytest.raises(NotFound, match=f"no {kind} named"):
        connect(vcsim).placement(**names)


def test_vm_folder_by_name_and_ambiguous(vcsim, connect):
    client = connect(vcsim)
    root = client.placement(pool="DC0_H0/Resources").folder
    name = f"jobs-{uuid.uuid4().hex[:6]}"
    first = root.CreateFolder(name)
    assert client.placement(pool="DC0_H0/Resources", folder=name).folder._moId == first._moId
    root.CreateFolder(f"other-{name}").CreateFolder(name)  # the same name one level down
    with pytest.raises(Ambiguous, match=f"2 VM folders named '{name}'"):
        client.placement(pool="DC0_H0/Resources", folder=name)


def test_networks_standard_and_distributed(vcsim, connect):
    client = connect(vcsim)
    where = client.placement(pool="DC0_H0/Resources")
    deadline = Deadline(10)
    standard = find_network(client.session, where, "VM Network", deadline)
    assert isinstance(standard.obj, vim.Network) and standard.switch_uuid is None
    distributed = find_network(client.session, where, "DC0_DVPG0", deadline)
    assert isinstance(distributed.obj, vim.dvs.DistributedVirtualPortgroup)
    assert distributed.portgroup_key == distributed.obj.key
    assert distributed.switch_uuid == distributed.obj.config.distributedVirtualSwitch.uuid
    with pytest.raises(NotFound, match="no network named 'nope'.*VM Network"):
        find_network(client.session, where, "nope", deadline)
