"""The examples run with ``vmgahp run`` and no environment at all (issue 7, defect 6).

No CONDOR_CONFIG, no _CONDOR_ knob, no VMGAHP_ variable: only PATH and HOME.
``vmgahp run`` takes VM_MEMORY, the libvirt URI and the domain type from this
host (here: software emulation, as /dev/kvm is a nested hypervisor's), says so,
and the real guest runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from guest_fixture import read_guest_file
from helpers import TOP

pytestmark = pytest.mark.libvirtd



def _clean_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmgahp", "run", *args], env=_clean_env(), cwd=TOP,
                          capture_output=True, text=True, timeout=timeout)


def test_hello_vm_with_no_environment(tiny_guest, libvirtd, tmp_path: Path) -> None:
    out = tmp_path / "hello.out"
    done = _run(["examples/hello-vm/hello.sub", "--output", str(out)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "default      VM_MEMORY = " in done.stdout
    assert "default      VM_KVM_DOMAIN_TYPE = " in done.stdout
    assert "WARNING" not in done.stderr  # the example is written the way a pool needs it
    answer = read_guest_file(out / "boot.img", "answer.txt")
    assert answer is not None and answer.strip() == "count=5 sum=100 min=4 max=42"


def test_checkpoint_example_with_no_environment(tiny_guest, libvirtd, tmp_path: Path) -> None:
    """Vacated by --max-wall with a checkpoint, then resumed from it: restored, not booted."""
    out = tmp_path / "ticks.out"
    first = _run(["examples/checkpoint/ticks.sub", "--output", str(out), "--max-wall", "25"])
    assert first.returncode == 124, first.stdout + first.stderr
    manifest = json.loads((out / "checkpoint" / "vmgahp-checkpoint.json").read_text())
    assert manifest["job"]["vm_name"] and "xen.mem.ckpt" in manifest["files"]
    second = _run(["examples/checkpoint/ticks.sub", "--output", str(out), "--max-wall", "10", "--keep-scratch",
                   "--resume", str(out / "checkpoint")])
    assert second.returncode == 124, second.stdout + second.stderr
    assert "resuming" in second.stdout and "WARNING" not in second.stderr
    log = Path(re.search(r"\(gahp log: (\S+)\)", second.stdout).group(1))
    try:
        events = log.read_text()
        assert '"domain_restored"' in events and '"domain_started"' not in events
    finally:
        shutil.rmtree(log.parent, ignore_errors=True)
