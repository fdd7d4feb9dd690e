"""The real starter's conversation, with its waits, against a real guest.

tests/starter_emulation.py drives vmgahp as condor_starter does (1 s after
every line, RESULTS every 2 s in blocking waits, R lines thrown away, STATUS
on a timer, QUIT and kill mode at the end). Only the 30 s before GETPID and
the status interval (at least 30 s in HTCondor) are shortened.

A ticking guest is hard-suspended (CONDOR_VM_SUSPEND) mid-count. While it is
saved, every STATUS must say Suspended: the C++ gahp says Stopped there, and
the starter ends the job half done. It is resumed and counts to the end: one
boot, every tick once, ``TINY-GUEST DONE rc=0``; the gahp exits 0 after QUIT
and kill mode finds no domain left.
"""

from __future__ import annotations

import json
import time
from itertools import pairwise
from pathlib import Path

import pytest

from gahp_process import VMGAHP, gahp_env
from guest_fixture import TinyGuest
from starter_emulation import StarterEmulation
from test_real_guest import (  # noqa: F401 - fixtures
    CLUSTER_BASE,
    JOB_GID,
    JOB_UID,
    assert_finished_in_one_run,
    domain_name,
    domain_state,
    domains,
    job_ad,
    scratch,
    ticks,
)

pytestmark = pytest.mark.libvirtd

TICKS = 14
STATUS_INTERVAL = 5.0
GETPID_DELAY = 2.0
SUSPENDED_FOR = 2 * STATUS_INTERVAL + 1  # at least two status ticks while saved


def test_starter_hard_suspends_and_resumes_a_ticking_guest(
    tiny_guest: TinyGuest, scratch: Path, libvirt_uri: str, domains: list  # noqa: F811 - test_real_guest's fixtures
) -> None:
    disk = tiny_guest.boot_disk(scratch / "tiny.img", ticks=TICKS, owner=(JOB_UID, JOB_GID))
    cluster = CLUSTER_BASE + 9
    name = domain_name(cluster)
    domains.append(name)
    ad = [line for line in job_ad(scratch, "tiny.img:vda:w:raw", cluster) if not line.startswith("VM_WORKING_DIR")]
    starter = StarterEmulation(
        [str(VMGAHP)],
        env=gahp_env(scratch, VM_KVM_LIBVIRT_URI=libvirt_uri, VM_KVM_DOMAIN_TYPE="qemu"),
        working_dir=scratch, job_ad=ad, vm_type="kvm", vm_name=name,
        getpid_delay=GETPID_DELAY, status_interval=STATUS_INTERVAL, read_timeout=180,
    )
    began = time.monotonic()
    try:
        start = starter.start_job()
        assert start.request_id == 2 and start.result == ["2", "0", "1"], start.result

        starter.run_until(lambda: bool(starter.statuses) and len(ticks(disk)) >= 2, timeout=120)
        assert starter.statuses and all(s.state == "Running" for s in starter.statuses), starter.statuses

        suspend = starter.suspend()
        assert suspend is not None and suspend.ok, suspend
        assert (scratch / "xen.mem.ckpt").is_file()
        frozen = ticks(disk)
        assert len(frozen) < TICKS, "the guest finished before it was suspended: make it tick longer"
        seen = len(starter.statuses)
        starter.run_for(SUSPENDED_FOR)
        while_saved = starter.statuses[seen:]
        assert len(while_saved) >= 2, while_saved
        assert [s.state for s in while_saved] == ["Suspended"] * len(while_saved), while_saved
        assert not starter.job_ended, "the starter ended a suspended job"
        assert ticks(disk) == frozen, "the guest ticked while saved"

        assert starter.resume().ok
        starter.run_until(lambda: False, timeout=150, raise_on_timeout=False)
        assert starter.job_ended, "the guest did not power off"
        assert starter.statuses[-1].state == "Stopped"
        assert starter.exit_status == 0
        assert starter.kill_mode is not None and starter.kill_mode.returncode == 0, starter.kill_mode
    finally:
        starter.kill()
    elapsed = time.monotonic() - began

    kills = [e for e in _log(scratch) if e.get("event") == "kill_mode"]
    assert kills and kills[-1].get("name") == name and kills[-1].get("destroyed") is False, kills
    assert domain_state(libvirt_uri, name) is None
    assert_finished_in_one_run(disk, TICKS)

    # The conversation as the starter wrote it.
    written = starter.wire.written()
    assert all(data.endswith(b"\r\n") and data.count(b"\n") == 1 for data in written)
    lines = [data[:-2].decode() for data in written]
    assert lines[:4] == ["COMMANDS", "SUPPORT_VMS", "ASYNC_MODE_ON", "CLASSAD"], lines[:4]
    assert lines[4] == f'VM_WORKING_DIR = "{scratch}"' and lines[5:5 + len(ad)] == ad
    assert lines[5 + len(ad):7 + len(ad)] == ["CLASSAD_END", "CONDOR_VM_START 2 kvm"]
    assert not any(line.upper().startswith("VERSION") for line in lines)
    commands = [line.split()[0] for line in lines
                if line.startswith("CONDOR_VM_") and line.split()[0] != "CONDOR_VM_STATUS"]
    assert commands == ["CONDOR_VM_START", "CONDOR_VM_GETPID", "CONDOR_VM_SUSPEND", "CONDOR_VM_RESUME",
                        "CONDOR_VM_GETPID"], commands
    ids = [int(line.split()[1]) for line in lines if line.startswith("CONDOR_VM_")]
    assert ids == list(range(2, 2 + len(ids)))  # one id per request, from 2
    assert lines[-1] == "QUIT"
    # The rhythm: 1 s after every line but the ad's, and START's first RESULTS 2 s after it.
    writes = starter.wire.writes()
    ad_lines = set(range(4, 5 + len(ad)))
    gaps = [b[1] - a[1] for i, (a, b) in enumerate(pairwise(writes)) if i not in ad_lines]
    assert min(gaps) >= 0.99, min(gaps)
    start_at = next(at for line, at in writes if line.startswith("CONDOR_VM_START"))
    first_poll = next(at for line, at in writes if line == "RESULTS" and at > start_at)
    assert first_poll - start_at >= 1.99
    print(f"starter emulation: {elapsed:.0f} s, {len(lines)} lines written, {len(starter.statuses)} statuses")


def _log(work: Path) -> list[dict]:
    events = []
    for line in (work / "vmgahp.log").read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events
