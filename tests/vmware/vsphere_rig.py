"""What the vSphere tests share besides fixtures (a module of its own: ``conftest``
is a name every test folder's conftest.py has, so tests must not import from it)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from vmgahp.drivers.vmware.placement import Placement
from vmgahp.drivers.vmware.vsphere import Vm, VSphere

# The standalone host's root pool: the vCenter model has two pools, so one is named.
POOL = "DC0_H0/Resources"


@dataclass
class Job:
    """A client, a placement and a new folder of this test's own on the datastore."""

    client: VSphere
    where: Placement
    folder: str
    ds_dir: Path  # the simulator's local directory behind the datastore
    local: Path  # a local scratch directory

    @property
    def dir(self) -> Path:
        """The job folder on the simulator's disk."""
        return self.ds_dir / self.folder

    def put(self, name: str, data: bytes) -> str:
        """Upload ``data`` as ``folder/name``; returns that relative path."""
        source = self.local / name.replace("/", "_")
        source.write_bytes(data)
        self.client.upload(self.where, source, f"{self.folder}/{name}")
        return f"{self.folder}/{name}"

    def register(self, name: str = "job", files: dict[str, bytes] | None = None) -> Vm:
        """A VM registered from ``folder/<name>.vmx``.

        vcsim opens ``<VM name>.nvram`` and ``vmware.log`` beside the VMX when registering
        (NotFound without them), where a real host reads the VMX and makes what is missing.
        """
        vm_name = f"{name}-{self.folder}"  # unique in the shared simulator
        wanted = {f"{name}.vmx": b'config.version = "8"\nvirtualHW.version = "13"\n', f"{vm_name}.nvram": b"NVRAM",
                  "vmware.log": b"", **(files or {})}  # fmt: skip
        for file, data in wanted.items():
            self.put(file, data)
        return self.client.register(self.where, f"{self.folder}/{name}.vmx", vm_name)


def datastore_dir(where: Placement) -> Path:
    """vcsim keeps a datastore's files in a local directory: its info.url."""
    return Path(where.datastore.info.url)


def new_job(client: VSphere, scratch: Path) -> Job:
    """A Job on ``client``'s (vCenter model) simulator, with a new folder."""
    where = client.placement(pool=POOL)
    folder = f"job-{uuid.uuid4().hex[:8]}"
    client.make_folder(where, folder)
    local = scratch / f"local-{folder}"
    local.mkdir()
    return Job(client, where, folder, datastore_dir(where), local)
