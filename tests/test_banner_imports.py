"""The way to the banner stays lean: no heavy library is imported before it.

The starter waits for the banner and the startd gives the probe 5 s, so the
gahp defers the hypervisor libraries, the job model (pydantic), the ClassAd
and HTCondor libraries and logging (structlog) until a command needs them.
The test runs the real start-up in a process, stops it at the banner and
lists what was imported by then.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gahp_process import gahp_env

HEAVY = ("libvirt", "pyVmomi", "pyVim", "pydantic", "pydantic_core", "structlog", "classad2", "htcondor2",
         "pycdlib", "http.client", "ssl", "concurrent.futures")

STOP_AT_BANNER = r'''
import os, sys, json
from vmgahp.gahp import daemon

def stop(self, banner):
    os.write(1, (json.dumps(sorted(sys.modules)) + "\n").encode())
    os._exit(0)

daemon.Daemon.write_banner = stop
from vmgahp.gahp.cli import main
main(["-f", "-M", "3"])
'''


def test_nothing_heavy_before_the_banner(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", STOP_AT_BANNER], env=gahp_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert "vmgahp.gahp.daemon" in loaded  # it did get that far
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY)
    assert heavy == [], heavy


HOST_CHECK = r'''
import json, sys
from vmgahp.gahp.condor_param import read_knobs
from vmgahp.gahp.startup import _check_host
_check_host("kvm", read_knobs("kvm"))
print(json.dumps(sorted(sys.modules)))
'''


def test_the_host_check_loads_no_job_model(tmp_path: Path) -> None:
    """The host check (before every banner and probe) needs libvirt and the
    configuration, not the job model: pydantic's ~50 ms come at the job ad."""
    done = subprocess.run([sys.executable, "-c", HOST_CHECK], env=gahp_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert "libvirt" in loaded  # it did check the host
    assert sorted(m for m in loaded if m.split(".")[0] in ("pydantic", "pydantic_core", "classad2", "pycdlib")) == []
