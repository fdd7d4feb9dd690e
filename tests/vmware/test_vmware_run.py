"""``vmgahp run`` on examples/vmware against vcsim: start, vacate with a
checkpoint at --max-wall, resume from it - the way a pool would run it."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gahp_rig import POOL
from vsphere_rig import datastore_dir

pytestmark = pytest.mark.vcsim

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vmware"


def test_example_runs_vacates_and_resumes(vcsim, client, scratch):
    from vmgahp.run.plan import make_plan

    _, where = client
    work = scratch / "example"
    shutil.copytree(EXAMPLE, work)
    for path in [scratch, work, work / "vm"]:
        path.chmod(0o755)
    options = argparse.Namespace(submit_file=str(work / "guest.sub"), resume=None, cluster_id=7, output=None,
                                 max_wall=None)  # fmt: skip
    vm_name = make_plan(options).job.vm_name
    # vcsim insists on "<VM name>.nvram" beside the VMX; a host reads the VMX's own nvram line.
    shutil.copy(work / "vm" / "guest.nvram", work / "vm" / f"{vm_name}.nvram")
    password = scratch / "password"
    password.write_text(vcsim.password + "\n")
    password.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_CONDOR_", "CONDOR_CONFIG", "VMGAHP_"))}
    env.update(CONDOR_CONFIG="/dev/null", _CONDOR_VM_MEMORY="1024", _CONDOR_VM_NETWORKING="true",
               _CONDOR_VM_NETWORKING_TYPE="nat", _CONDOR_VMWARE_VSPHERE_URL=vcsim.url,
               _CONDOR_VMWARE_USER=vcsim.user, _CONDOR_VMWARE_PASSWORD_FILE=str(password),
               _CONDOR_VMWARE_CA_FILE=str(vcsim.ca_file), _CONDOR_VMWARE_RESOURCE_POOL=POOL,
               _CONDOR_VMWARE_NAT_PORTGROUP="VM Network")  # fmt: skip
    run = [sys.executable, "-m", "vmgahp", "run", "guest.sub", "--cluster-id", "7", "--status-interval", "1",
           "--scratch-root", str(scratch)]  # fmt: skip

    first = subprocess.run([*run, "--max-wall", "4", "-o", "first"], cwd=work, env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert first.returncode == 124, first.stdout + first.stderr
    checkpoint = work / "first" / "checkpoint"
    names = sorted(p.name for p in checkpoint.iterdir())
    assert "vmgahp-checkpoint.json" in names and "vmgahp-vmware.guest.vmx" in names
    assert "vmgahp-vmware.guest-vmgahp.vmdk" in names  # the child disk travels with the state
    assert not list(datastore_dir(where).glob(f"vmgahp-{vm_name}-*"))

    second = subprocess.run([*run, "--max-wall", "4", "-o", "second", "--resume", str(checkpoint)], cwd=work,
                            env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert second.returncode == 124, second.stdout + second.stderr
    assert "Running" in second.stdout
    assert sorted(p.name for p in (work / "second" / "checkpoint").iterdir()) == names
    assert not list(datastore_dir(where).glob(f"vmgahp-{vm_name}-*"))
