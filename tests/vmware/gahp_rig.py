"""A vmware gahp process on a simulator: its knobs, a job's VM directory, its ad.

``Rig(sim, tmp_path)`` writes the password file (mode 0600) and a working
directory holding what a transferred ``vmware_dir`` brings: ``job.vmx``, a base
disk (descriptor and flat extent), ``<VM name>.nvram`` and ``vmware.log``
(vcsim insists on both beside the VMX at register; a host makes them when
missing). ``rig.gahp(**knobs)`` starts the daemon (``-f -M 3``) with the
vmware knobs for that simulator, ``rig.ad(**attrs)`` is the job ad.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from vsphere_rig import datastore_dir

from gahp_process import GAHP_ARGV, GahpProcess, gahp_env

VM_NAME = "alice_example.org_42.0"
POOL = "DC0_H0/Resources"
VMX = b'config.version = "8"\nvirtualHW.version = "13"\nguestOS = "otherlinux-64"\n'
BASE = b"# Disk DescriptorFile\nversion=1\nparentCID=ffffffff\n"
FLAT = bytes(range(256)) * 64


class Rig:
    def __init__(self, sim, root: Path, name: str = "work", password: str | None = None) -> None:
        self.sim = sim
        self.root = root
        root.chmod(0o755)
        self.work = root / name
        self.work.mkdir(mode=0o755)
        self.password_file = root / f"{name}-password"
        self.password_file.write_text((password if password is not None else sim.password) + "\n")
        self.password_file.chmod(0o600)
        self.write_vm_dir(self.work)

    @staticmethod
    def write_vm_dir(work: Path) -> None:
        for name, data in (("job.vmx", VMX), ("base.vmdk", BASE), ("base-flat.vmdk", FLAT),
                           (f"{VM_NAME}.nvram", b"NVRAM"), ("vmware.log", b"")):
            (work / name).write_bytes(data)
            (work / name).chmod(0o644)

    def knobs(self, **extra: str) -> dict[str, str]:
        knobs = {
            "VMGAHP_VMTYPE": "vmware",
            "VM_NETWORKING": "true", "VM_NETWORKING_TYPE": "nat",
            "VMWARE_VSPHERE_URL": self.sim.url, "VMWARE_USER": self.sim.user,
            "VMWARE_PASSWORD_FILE": str(self.password_file), "VMWARE_CA_FILE": str(self.sim.ca_file),
            "VMWARE_RESOURCE_POOL": POOL, "VMWARE_NAT_PORTGROUP": "VM Network",
            "VMWARE_CALL_TIMEOUT": "30", "VM_GAHP_LOG": str(self.root / f"{self.work.name}.log"),
        }
        knobs.update(extra)
        return {k: v for k, v in knobs.items() if v is not None}

    @property
    def log(self) -> Path:
        return self.root / f"{self.work.name}.log"

    def gahp(self, **extra: str) -> GahpProcess:
        gahp = GahpProcess(self.work, **self.knobs(**extra))
        gahp.handshake()
        return gahp

    def probe(self, timeout: float = 10.0, **extra: str) -> subprocess.CompletedProcess:
        env = gahp_env(self.work, **self.knobs(**extra))
        return subprocess.run([*GAHP_ARGV, "-f", "-M", "0", "vmtype", "vmware"], env=env, cwd=self.work,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def ad(self, **extra: str) -> list[str]:
        lines = {
            "VM_WORKING_DIR": f'"{self.work}"', "ClusterId": "42", "ProcId": "0", "User": '"alice@example.org"',
            "JobVMType": '"vmware"', "JobVMMemory": "256", "JobVM_VCPUS": "2",
            "VMPARAM_VMware_Transfer": "true", "VMPARAM_VMware_SnapshotDisk": "true",
            "VMPARAM_VMware_Dir": '"/submit/alice/vm"', "VMPARAM_VMware_VMX_File": '"job.vmx"',
            "VMPARAM_VMware_VMDK_Files": '"base.vmdk,base-flat.vmdk"',
            "JobVMNetworking": "true", "JobVMNetworkingType": '"nat"', "JobVM_MACADDR": '"00:50:56:01:02:03"',
            "JobVMCheckpoint": "true",
        }
        lines.update(extra)
        return [f"{k} = {v}" for k, v in lines.items() if v is not None]


def all_output(gahp: GahpProcess, rig: Rig) -> str:
    """Everything the gahp wrote anywhere: its log and stderr (stdout is the protocol, read by the test)."""
    text = rig.log.read_text(errors="replace") if rig.log.exists() else ""
    if gahp.proc.stderr is not None and gahp.proc.poll() is not None:
        text += gahp.proc.stderr.read().decode(errors="replace")
    return text


def job_folders(where) -> list[Path]:
    return sorted(datastore_dir(where).glob(f"vmgahp-{VM_NAME}-*"))


def find_vm(client, where, name=VM_NAME):
    from vmgahp.drivers.vmware.vsphere import Vm

    [folder] = job_folders(where)
    vm = client.find_vm(where, f"{folder.name}/job.vmx")
    assert vm is not None and vm.name == name
    return Vm(vm.obj, vm.name, vm.vmx), folder


@pytest.fixture
def client(vcsim, connect):
    vs = connect(vcsim)
    return vs, vs.placement(pool=POOL)


@pytest.fixture
def scratch():
    """A root the job user (uid 1000) can reach: pytest's tmp_path is private to root."""
    path = Path(tempfile.mkdtemp(prefix="vmgahp-vmware-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def rig(vcsim, scratch, client):
    _, where = client
    assert not job_folders(where), "a job folder of an earlier test was left on the datastore"
    rig = Rig(vcsim, scratch)
    yield rig
    leftovers = job_folders(where)
    for folder in leftovers:  # so the next test starts clean even if this one failed
        client[0].delete(where, folder.name)
    assert not leftovers, f"left on the datastore: {leftovers}"


