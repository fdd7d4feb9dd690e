"""Four VM jobs at once on one libvirtd, as four starters would run them.

Every VM job has its own gahp (the starter spawns one per job); the four
share the machine's libvirtd, its log file and the zstd and libvirt helper
processes. Each boots the tiny guest, takes a periodic checkpoint and is
resumed - the starter's order: CONDOR_VM_CHECKPOINT, the upload, then
``RemoteContinue`` sends CONDOR_VM_RESUME (``vm_proc.cpp``, ``VMProc::Ckpt``
and ``VMProc::CkptDone``) - and then runs to its end and powers itself off.

All four must finish with every tick once and in order (a restored guest goes
on with its loop; a cold boot would say "boot" twice), each with its own
checkpoint in its own working directory, and no domain may be left.
The times of START and CHECKPOINT with four at once against one alone are
measured by bench/report.py, not here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from gahp_process import GahpProcess, job_ad
from guest_fixture import TinyGuest
from test_real_guest import (  # noqa: F401 - fixtures
    CLUSTER_BASE,
    JOB_GID,
    JOB_UID,
    assert_finished_in_one_run,
    domain_name,
    domain_state,
    domains,
    gahps,
    quit_gahp,
    wait_for_status,
    wait_for_ticks,
)

pytestmark = pytest.mark.libvirtd

VMS = 4
TICKS = 20  # long enough that every guest is still ticking when it is checkpointed
FINISH_TIMEOUT = 240.0  # four software-emulated guests on two cores


@pytest.fixture
def places() -> Iterator[list[tuple[Path, Path]]]:
    """Per job: its scratch dir (as the starter makes it) and a directory
    standing for a shared filesystem, where its disk lives (a checkpointed
    job whose disk is transferred needs a snapshot disk; this keeps the
    guest's own disk readable by the test)."""
    made = []
    for _ in range(VMS):
        scratch = Path(tempfile.mkdtemp(prefix="vmgahp-four-", dir="/tmp"))
        shared = Path(tempfile.mkdtemp(prefix="vmgahp-four-shared-", dir="/tmp"))
        for path in (scratch, shared):
            os.chmod(path, 0o755)
        made.append((scratch, shared))
    yield made
    for scratch, shared in made:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(shared, ignore_errors=True)


def one_job(index: int, guest: TinyGuest, scratch: Path, shared: Path, uri: str, gahps: list, domains: list,  # noqa: F811 - the test's fixtures, passed on
            outcome: dict) -> None:
    cluster = CLUSTER_BASE + 60 + index
    domains.append(domain_name(cluster))
    disk = guest.boot_disk(shared / "tiny.img", ticks=TICKS, owner=(JOB_UID, JOB_GID))
    gahp = GahpProcess(scratch, VM_KVM_LIBVIRT_URI=uri, VM_KVM_DOMAIN_TYPE="qemu", VM_GAHP_SHUTDOWN_TIMEOUT="60")
    gahps.append(gahp)
    gahp.handshake()
    gahp.send_ad(job_ad(scratch, disk=f"{disk}:vda:w:raw", ClusterId=str(cluster), JobVMMemory="256",
                        JobVMCheckpoint="true"))
    assert gahp.call("CONDOR_VM_START", "kvm", timeout=180) == (True, "1"), gahp.stderr_tail()
    wait_for_ticks(disk, 2, timeout=180)
    assert gahp.call("CONDOR_VM_CHECKPOINT", "1", timeout=180) == (True, "NULL"), gahp.stderr_tail()
    manifest = json.loads((scratch / "vmgahp-checkpoint.json").read_text())  # this job's, in its own dir
    assert gahp.call("CONDOR_VM_STATUS", "1") == (True, "STATUS=Suspended")
    assert gahp.call("CONDOR_VM_RESUME", "1", timeout=180) == (True, "NULL"), gahp.stderr_tail()
    wait_for_status(gahp, "Stopped", timeout=FINISH_TIMEOUT)
    quit_gahp(gahp)
    outcome[index] = (cluster, disk, manifest["job"]["vm_name"])


def test_four_jobs_at_once_boot_checkpoint_resume_and_finish(
    tiny_guest: TinyGuest, places: list, libvirt_uri: str, gahps: list, domains: list  # noqa: F811 - test_real_guest's fixtures
) -> None:
    outcome: dict[int, tuple[int, Path, str]] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            one_job(index, tiny_guest, *places[index], libvirt_uri, gahps, domains, outcome)
        except BaseException as exc:  # noqa: BLE001 - re-raised below with the job's number
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(VMS)]
    for thread in threads:
        thread.start()
    end = time.monotonic() + FINISH_TIMEOUT + 100  # inside the test's own deadline (tests/deadline.py)
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a job did not finish"
    if errors:
        raise errors[0]
    assert sorted(outcome) == list(range(VMS))
    for cluster, disk, checkpointed in outcome.values():
        assert_finished_in_one_run(disk, TICKS)  # restored, not booted again; no other job's ticks
        assert domain_state(libvirt_uri, domain_name(cluster)) is None
        assert checkpointed == domain_name(cluster)  # each checkpoint is its own job's
