"""The vmware gahp process against vcsim: the whole protocol lifecycle.

Driven over pipes as condor_starter drives it. What the simulator holds after
each step is read back through a client of its own (settings, registration,
datastore files - vcsim keeps a datastore in a local directory). vcsim runs no
guest: quick stats are zero (CPUTIME stays 0), suspend writes no .vmss/.vmem
and registering reads no VMX, so what is asserted is what vmgahp sent and did.
"""

from __future__ import annotations

import json
import re

import pytest
from gahp_rig import BASE, FLAT, VM_NAME, VMX, Rig, find_vm, job_folders

from vmgahp.drivers.vmware.specs import split_ds_path

pytestmark = pytest.mark.vcsim

LOCAL_SETTINGS = """ignored = "outside the markers"
### Start local parameters ###
vmgahp.site = "test-site"
SET.guest.ipAddress = "10.1.2.3"
### End local parameters ###
"""

RUNNING = re.compile(r"(MAC=\S+ )?(IP=\S+ )?STATUS=Running( |$)")


def test_lifecycle_settings_and_cleanup(rig, client, tmp_path):
    vs, where = client
    settings = tmp_path / "local.vmx"
    settings.write_text(LOCAL_SETTINGS)
    (rig.work / "input.txt").write_text("the job's input\n")
    gahp = rig.gahp(VMWARE_LOCAL_SETTINGS_FILE=str(settings))
    try:
        gahp.send_ad(rig.ad(VMPARAM_CDROM_Files='"input.txt"'))
        assert gahp.call("CONDOR_VM_START", "vmware") == (True, "1")
        vm, folder = find_vm(vs, where)
        # What the driver sent, read back from the simulator.
        got = vs.settings(vm)
        assert (got.memory_mb, got.cpus) == (256, 2)
        [nic] = got.nics
        assert (nic.mac, nic.address_type, nic.network) == ("00:50:56:01:02:03", "manual", "VM Network")
        assert got.isos == (f"[{where.datastore_name}] {folder.name}/vmgahp-cdrom.iso",)
        [disk] = got.disks
        assert disk.file == f"[{where.datastore_name}] {folder.name}/base-vmgahp.vmdk"
        assert disk.parent == f"[{where.datastore_name}] {folder.name}/base.vmdk"
        assert got.extra_config.get("vmgahp.site") == "test-site" and "ignored" not in got.extra_config
        assert vs.status(vm).ip == "10.1.2.3"  # vcsim's SET.guest.ipAddress hook: the key was sent
        # The uploaded bytes, on the simulator's datastore.
        for name, data in (("job.vmx", VMX), ("base.vmdk", BASE), ("base-flat.vmdk", FLAT)):
            assert (folder / name).read_bytes() == data
        assert (folder / "vmgahp-cdrom.iso").read_bytes() == (rig.work / "vmgahp-cdrom.iso").read_bytes()

        ok, text = gahp.call("CONDOR_VM_STATUS", "1")
        # MAC= and IP= first, as the VMware gahp wrote them (spec 3.12); the starter reads both.
        assert ok and text.startswith("MAC=00:50:56:01:02:03 IP=10.1.2.3 STATUS=Running CPUUTILIZATION="), text
        assert "MAXMEMORY=262144" in text, text
        assert gahp.call("CONDOR_VM_GETPID", "1") == (True, "0")

        # SOFT_SUSPEND: vSphere has no pause; it is a suspend to the datastore, saved here.
        assert gahp.call("CONDOR_VM_SOFT_SUSPEND", "1")[0]
        assert gahp.call("CONDOR_VM_STATUS", "1") == (True, "STATUS=Suspended")
        assert not job_folders(where), "a saved VM is unregistered and its folder gone"
        assert (rig.work / "vmgahp-vmware.job.vmx").is_file()
        assert gahp.call("CONDOR_VM_RESUME", "1")[0]
        vm, folder = find_vm(vs, where)
        assert vs.power_state(vm) == "poweredOn"
        assert not (rig.work / "vmgahp-vmware.job.vmx").exists(), "a resumed suspend leaves no state behind"

        assert gahp.call("CONDOR_VM_SUSPEND", "1")[0]
        assert gahp.call("CONDOR_VM_STATUS", "1") == (True, "STATUS=Suspended")
        assert gahp.call("CONDOR_VM_RESUME", "1")[0]
        ok, text = gahp.call("CONDOR_VM_STATUS", "1")
        assert ok and RUNNING.match(text), text

        ok, text = gahp.call("CONDOR_VM_STOP", "1")
        assert ok, text
        assert not job_folders(where), "STOP deletes vmgahp's folder"
        assert vs.find_vm(where, f"{folder.name}/job.vmx") is None
        # The child disk came back as the output; the base files are as they were.
        assert (rig.work / "base-vmgahp.vmdk").is_file()
        assert (rig.work / "base.vmdk").read_bytes() == BASE and (rig.work / "base-flat.vmdk").read_bytes() == FLAT
        assert gahp.call("CONDOR_VM_STATUS", "1") == (True, "STATUS=Stopped")
        assert gahp.reply("QUIT") == "S"
        assert gahp.wait(30) == 0
    finally:
        gahp.kill()


def test_checkpoint_downloads_and_restores_in_a_new_dir(rig, client, scratch):
    vs, where = client
    gahp = rig.gahp()
    try:
        gahp.send_ad(rig.ad())
        assert gahp.call("CONDOR_VM_START", "vmware") == (True, "1")
        vm, folder = find_vm(vs, where)
        # What a host writes on suspend (vcsim writes nothing): put it there.
        vmss, vmem = bytes(range(256)) * 300, b"\x5a" * (1 << 20)
        (folder / f"{VM_NAME}.vmss").write_bytes(vmss)
        (folder / f"{VM_NAME}.vmem").write_bytes(vmem)
        (folder / "base-vmgahp-flat.vmdk").write_bytes(b"\x07" * 8192)  # what the guest wrote
        ok, text = gahp.call("CONDOR_VM_CHECKPOINT", "1")
        assert ok, text
        assert gahp.call("CONDOR_VM_STATUS", "1") == (True, "STATUS=Suspended")
        manifest = json.loads((rig.work / "vmgahp-checkpoint.json").read_text())
        saved = {name: (rig.work / name).read_bytes() for name in manifest["written"]}
        assert saved[f"vmgahp-vmware.{VM_NAME}.vmss"] == vmss and saved[f"vmgahp-vmware.{VM_NAME}.vmem"] == vmem
        assert saved["vmgahp-vmware.base-vmgahp-flat.vmdk"] == b"\x07" * 8192
        assert manifest["written"][0] == "vmgahp-vmware.job.vmx"
        assert (rig.work / "job.vmx").read_bytes() == VMX, "the job's own VMX is never replaced"
        assert not job_folders(where)
        assert gahp.reply("QUIT") == "S"
        gahp.wait(30)
    finally:
        gahp.kill()

    # A new gahp in another working dir, with the job's input files and the
    # checkpoint's files, as the starter brings them after a vacate.
    second = Rig(rig.sim, scratch, name="restart")
    for name in [*manifest["written"], "vmgahp-checkpoint.json", "xen.mem.ckpt.timestamp"]:
        (second.work / name).write_bytes((rig.work / name).read_bytes())
    gahp = second.gahp()
    try:
        gahp.send_ad(second.ad(VM_WORKING_DIR=f'"{second.work}"'))
        assert gahp.call("CONDOR_VM_START", "vmware") == (True, "1")
        [folder] = job_folders(where)
        assert folder.name == manifest["driver"]["folder"], "restored into the folder name it was saved from"
        assert (folder / f"{VM_NAME}.vmss").read_bytes() == vmss
        assert (folder / "base-vmgahp-flat.vmdk").read_bytes() == b"\x07" * 8192
        assert (folder / "base-flat.vmdk").read_bytes() == FLAT  # the base, from the new dir's inputs
        vm = vs.find_vm(where, f"{folder.name}/job.vmx")
        assert vm is not None and vs.power_state(vm) == "poweredOn"
        ok, text = gahp.call("CONDOR_VM_STATUS", "1")
        assert ok and RUNNING.match(text), text
        assert gahp.call("CONDOR_VM_STOP", "1")[0]
        assert not job_folders(where)
        assert gahp.reply("QUIT") == "S"
    finally:
        gahp.kill()


def test_job_ad_tokens(rig):
    gahp = rig.gahp()
    try:
        cases = [
            ({"VMPARAM_VMware_VMX_File": None}, "VMGAHP_ERR_JOBCLASSAD_NO_VMWARE_VMX_PARAM"),
            ({"VMPARAM_VMware_VMX_File": '"other.vmx"'}, "VMGAHP_ERR_VMWARE_VMX_NOT_FOUND"),
            ({"VMPARAM_VMware_Transfer": "false", "VMPARAM_VMware_VMDK_Files": '"shared.vmdk"'},
             "VMGAHP_ERR_VMWARE_VMX_ERROR"),
            ({"JobVM_MACADDR": '"52:54:00:12:34:56"'}, "VMGAHP_ERR_CRITICAL"),
        ]
        for attrs, token in cases:
            gahp.send_ad(rig.ad(**attrs))
            assert gahp.call("CONDOR_VM_START", "vmware") == (False, token), attrs
    finally:
        gahp.kill()


def test_the_vm_vanishing_reads_as_stopped(rig, client):
    vs, where = client
    gahp = rig.gahp()
    try:
        gahp.send_ad(rig.ad())
        assert gahp.call("CONDOR_VM_START", "vmware") == (True, "1")
        vm, folder = find_vm(vs, where)
        vs.power_off(vm)
        vs.unregister(vm)
        assert gahp.call("CONDOR_VM_STATUS", "1") == (True, "STATUS=Stopped")
        assert gahp.call("CONDOR_VM_STOP", "1")[0]
        assert not job_folders(where)
    finally:
        gahp.kill()


def test_guest_power_off_brings_the_output_back(rig, client):
    vs, where = client
    gahp = rig.gahp()
    try:
        gahp.send_ad(rig.ad())
        assert gahp.call("CONDOR_VM_START", "vmware") == (True, "1")
        vm, folder = find_vm(vs, where)
        vs.power_off(vm)  # as if the guest shut itself down
        assert gahp.call("CONDOR_VM_STATUS", "1") == (True, "STATUS=Stopped")
        assert gahp.call("CONDOR_VM_STOP", "1")[0]
        assert not job_folders(where)
        assert (rig.work / "base-vmgahp.vmdk").is_file()
        assert split_ds_path(vm.vmx)[1].startswith(folder.name)
    finally:
        gahp.kill()


def test_a_vm_of_that_name_is_left_alone(rig, client, scratch):
    """Two schedds can hand one name to two slots: the second START fails as the host's fault."""
    vs, where = client
    first = rig.gahp()
    other = Rig(rig.sim, scratch, name="other")
    second = other.gahp()
    try:
        first.send_ad(rig.ad())
        assert first.call("CONDOR_VM_START", "vmware") == (True, "1")
        vm, folder = find_vm(vs, where)
        second.send_ad(other.ad(VM_WORKING_DIR=f'"{other.work}"'))
        assert second.call("CONDOR_VM_START", "vmware") == (False, "VMGAHP_ERR_INTERNAL")
        assert "already registered" in other.log.read_text()
        assert vs.power_state(vm) == "poweredOn" and job_folders(where) == [folder]
        assert first.call("CONDOR_VM_STOP", "1")[0]
    finally:
        first.kill()
        second.kill()
