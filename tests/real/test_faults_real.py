"""Faults on a real libvirtd + QEMU (issue 7, "Hardening").

Every test runs the real daemon process against a *private* libvirtd
(tests/private_libvirtd.py) that it may SIGKILL, SIGSTOP and restart without
disturbing the shared one, with the tiny guest under QEMU (TCG):

* libvirtd SIGKILLed while a START is pending, and mid-save during a
  CHECKPOINT: a failure token well within the deadline, the command loop
  answering throughout, and after libvirtd is back the gahp reconnects and
  serves the next command; nothing half-written passes for a checkpoint.
* libvirtd SIGSTOPped during a STATUS: the STATUS is answered by its
  deadline, COMMANDS meanwhile; after SIGCONT STATUS is Running again.
* The starter dying (SIGKILL of the process that holds the gahp's pipes),
  stdin EOF and SIGTERM: zero domains left on the daemon.
* A checkpoint whose memory state is garbage or truncated: START answers
  VMGAHP_ERR_BAD_IMAGE, no domain runs (no cold boot), every file that came
  back with the checkpoint is byte for byte what it was.

Bounds are generous (a loaded 2-core host): what is asserted is "within the
deadline plus slack", never a tight time. Each test uses a VM name of its own
(a distinct ClusterId). The file takes about a minute here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from gahp_process import GahpProcess, job_ad
from guest_fixture import TinyGuest
from helpers import TESTS
from private_libvirtd import PrivateLibvirtd

pytestmark = pytest.mark.libvirtd

CALL_TIMEOUT = 8.0  # VM_GAHP_CALL_TIMEOUT of every gahp here
SLACK = 7.0  # a loaded host: thread start-up, RESULTS polling, Python imports
BOOT_TIMEOUT = 90.0
CLEANUP_TIMEOUT = 30.0  # the gahp's own bound is 15 s per domain, in parallel
CLUSTER_BASE = 700_000 + (os.getpid() % 10_000) * 10
PIPE_PARENT = TESTS / "pipe_parent.py"
CHECKPOINT_FILES = ("boot.img", "xen.mem.ckpt", "xen.mem.ckpt.timestamp", "vmgahp-checkpoint.json",
                    "vmgahp-overlay-vda.qcow2")
LOG = "vmgahp.log"


# ------------------------------------------------------------------ fixtures
def _scratch(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = _scratch("vmgahp-fault-")
    yield path
    if not os.environ.get("VMGAHP_KEEP_TEST_DIRS"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def gahps() -> Iterator[list[GahpProcess]]:
    started: list[GahpProcess] = []
    yield started
    for gahp in started:
        gahp.kill()


# ------------------------------------------------------------------- helpers
def knobs(daemon: PrivateLibvirtd, **extra: str) -> dict[str, str]:
    return dict(VM_KVM_LIBVIRT_URI=daemon.uri, VM_KVM_DOMAIN_TYPE="qemu", VM_GAHP_CALL_TIMEOUT=f"{CALL_TIMEOUT:g}",
                VM_GAHP_SHUTDOWN_TIMEOUT="5", **extra)


def ad(work: Path, cluster: int, memory: int = 128, checkpoint: bool = False, **extra: str) -> list[str]:
    """The tiny guest's job ad: boot.img in the working dir; with ``checkpoint``
    on a snapshot overlay (a transferred disk may checkpoint only so)."""
    attrs: dict[str, str] = dict(ClusterId=str(cluster), JobVMMemory=str(memory), JobVM_VCPUS="1")
    if checkpoint:
        attrs.update(JobVMCheckpoint="true", VMPARAM_vm_Snapshot_Disk="true")
    attrs.update(extra)
    return job_ad(work, disk="boot.img:vda:w:raw", **attrs)


def name_of(cluster: int) -> str:
    return f"alice_example.org_{cluster}.0"


def new_gahp(work: Path, daemon: PrivateLibvirtd, gahps: list, launcher: tuple[str, ...] = (), **extra: str):
    gahp = GahpProcess(work, launcher=launcher, **knobs(daemon, **extra))
    gahps.append(gahp)
    gahp.handshake()
    return gahp


def timed_result(gahp: GahpProcess, request_id: int, timeout: float) -> tuple[bool, str, float]:
    began = time.monotonic()
    ok, text = gahp.result(request_id, timeout=timeout)
    return ok, text, time.monotonic() - began


def assert_alive(gahp: GahpProcess) -> None:
    assert gahp.proc.poll() is None, gahp.stderr_tail()
    assert gahp.reply("COMMANDS", timeout=5).startswith("S ASYNC_MODE_ON"), gahp.stderr_tail()


def status(gahp: GahpProcess, vm_id: int = 1, timeout: float = CALL_TIMEOUT + SLACK) -> str:
    ok, text = gahp.call("CONDOR_VM_STATUS", str(vm_id), timeout=timeout)
    assert ok, f"{text}; {gahp.stderr_tail()}"
    return text


def wait_for_status(gahp: GahpProcess, word: str, vm_id: int = 1, timeout: float = BOOT_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = status(gahp, vm_id)
        if text.split()[0] == f"STATUS={word}":
            return text
        time.sleep(0.5)
    raise AssertionError(f"STATUS={word} not reached in {timeout:g} s; last {text!r}; {gahp.stderr_tail()}")


def wait_until(predicate, timeout: float, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def quit_and_check(gahp: GahpProcess, daemon: PrivateLibvirtd) -> None:
    assert gahp.reply("QUIT", timeout=CLEANUP_TIMEOUT) == "S"
    assert gahp.wait(timeout=CLEANUP_TIMEOUT) == 0
    assert daemon.domains() == [], "QUIT left domains behind"


def log_events(work: Path) -> list[dict]:
    events = []
    for line in (work / LOG).read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def connections(work: Path) -> int:
    """How many times the gahp has opened its libvirt connection."""
    return sum(e.get("event") == "libvirt_connected" for e in log_events(work))


def sha256_tree(work: Path, skip: tuple[str, ...] = (LOG,)) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(work.iterdir())
        if path.is_file() and path.name not in skip
    }


def report(what: str, **numbers: object) -> None:
    """Measurements, shown with ``pytest -s`` (docs/admin.md's fault table is made from them)."""
    print(f"\n[fault] {what}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()), file=sys.stderr)


# ------------------------------------------------------- libvirtd SIGKILLed
def test_libvirtd_killed_during_start(tiny_guest: TinyGuest, private_libvirtd: PrivateLibvirtd,
                                      scratch: Path, gahps: list) -> None:
    """START pending on a stopped libvirtd, then libvirtd SIGKILLed: a token at once,
    the gahp lives; libvirtd restarted, the next START reconnects and its VM runs."""
    daemon = private_libvirtd
    cluster = CLUSTER_BASE + 1
    tiny_guest.boot_disk(scratch / "boot.img", ticks=120)
    gahp = new_gahp(scratch, daemon, gahps)
    gahp.send_ad(ad(scratch, cluster))
    daemon.stop()
    began = time.monotonic()
    start_id = gahp.submit("CONDOR_VM_START", "kvm")
    time.sleep(2.0)  # the START builds the job and is now waiting on libvirtd
    assert start_id not in gahp.collect(), "the START finished while libvirtd was stopped"
    assert_alive(gahp)
    killed = time.monotonic()
    daemon.kill()
    ok, text, _ = timed_result(gahp, start_id, timeout=CALL_TIMEOUT + SLACK)
    answered = time.monotonic()
    report("libvirtd SIGKILL during START", token=text, after_kill_s=round(answered - killed, 2),
           after_start_s=round(answered - began, 2))
    assert (ok, text) == (False, "VMGAHP_ERR_INTERNAL")
    assert answered - began < CALL_TIMEOUT + SLACK
    assert_alive(gahp)

    daemon.start()
    assert daemon.domains() == []  # the START never reached libvirtd: nothing to clean
    connects = connections(scratch)
    second = gahp.submit("CONDOR_VM_START", "kvm")
    ok, text, elapsed = timed_result(gahp, second, timeout=60)
    report("next START after the restart", result=text, seconds=round(elapsed, 2))
    assert (ok, text) == (True, "2"), gahp.stderr_tail()
    assert connections(scratch) == connects + 1  # a new connection to the new libvirtd
    assert daemon.domains() == [name_of(cluster)]
    assert status(gahp, 2).startswith("STATUS=Running")

    # Killed and restarted while the gahp is idle: its connection is dead without
    # it knowing; the next STATUS reconnects and answers, no token.
    daemon.restart()
    assert status(gahp, 2).startswith("STATUS=Running")
    assert connections(scratch) == connects + 2
    quit_and_check(gahp, daemon)


def test_libvirtd_killed_mid_save_of_a_checkpoint(tiny_guest: TinyGuest, private_libvirtd: PrivateLibvirtd,
                                                  scratch: Path, gahps: list) -> None:
    """CHECKPOINT of a running 256 MiB guest, libvirtd SIGKILLed while the memory is
    being written: a token, the gahp lives, no checkpoint file left (a half-written
    save is never taken for one); after a restart STATUS and STOP are served."""
    daemon = private_libvirtd
    cluster = CLUSTER_BASE + 2
    tiny_guest.boot_disk(scratch / "boot.img", ticks=120)
    gahp = new_gahp(scratch, daemon, gahps)
    gahp.send_ad(ad(scratch, cluster, memory=256, checkpoint=True))
    assert gahp.call("CONDOR_VM_START", "kvm", timeout=60) == (True, "1"), gahp.stderr_tail()
    time.sleep(4.0)  # let the guest boot a while: its memory is worth a second or two of saving
    assert status(gahp).startswith("STATUS=Running")
    before = set(p.name for p in scratch.iterdir())
    base_sha = hashlib.sha256((scratch / "boot.img").read_bytes()).hexdigest()
    partial = scratch / "xen.mem.ckpt.partial"

    began = time.monotonic()
    ckpt_id = gahp.submit("CONDOR_VM_CHECKPOINT", "1")
    assert wait_until(lambda: partial.exists() and partial.stat().st_size > (4 << 20), timeout=30), \
        "the save never started writing"
    written = partial.stat().st_size
    killed = time.monotonic()
    daemon.kill()
    ok, text, _ = timed_result(gahp, ckpt_id, timeout=CALL_TIMEOUT + SLACK)
    answered = time.monotonic()
    report("libvirtd SIGKILL during CHECKPOINT", token=text, saved_mib_at_kill=written >> 20,
           after_kill_s=round(answered - killed, 2), after_checkpoint_s=round(answered - began, 2))
    assert (ok, text) == (False, "VMGAHP_ERR_VM_CANNOT_CREATE_CKPT_FILES")
    assert answered - began < CALL_TIMEOUT + SLACK
    assert_alive(gahp)
    after = set(p.name for p in scratch.iterdir())
    for name in ("xen.mem.ckpt", "xen.mem.ckpt.partial", "xen.mem.ckpt.timestamp", "vmgahp-checkpoint.json"):
        assert name not in after, f"{name} left after a failed checkpoint"
    assert after == before
    assert sha256_tree(scratch, skip=(LOG, "vmgahp-overlay-vda.qcow2"))["boot.img"] == base_sha

    daemon.start()  # re-attaches to the QEMU that outlived it; the save job is cancelled
    # libvirtd resumes the guest it had paused for the save (reason "save canceled")
    # a few tens of ms after it is back; a STATUS in between says Suspended.
    first = status(gahp)
    text = wait_for_status(gahp, "Running", timeout=20)
    report("STATUS after the restart", first=first.split()[0], then=text.split()[0])
    assert daemon.domains() == [name_of(cluster)]
    assert gahp.call("CONDOR_VM_STOP", "1", timeout=60) == (True, "NULL")
    assert status(gahp) == "STATUS=Stopped"
    assert daemon.domains() == []
    quit_and_check(gahp, daemon)


# ------------------------------------------------------ libvirtd SIGSTOPped
def test_libvirtd_stopped_during_status(tiny_guest: TinyGuest, private_libvirtd: PrivateLibvirtd,
                                        scratch: Path, gahps: list) -> None:
    """A hung libvirtd costs a STATUS its deadline, never more; the loop answers meanwhile."""
    daemon = private_libvirtd
    cluster = CLUSTER_BASE + 3
    tiny_guest.boot_disk(scratch / "boot.img", ticks=120)
    gahp = new_gahp(scratch, daemon, gahps)
    gahp.send_ad(ad(scratch, cluster))
    assert gahp.call("CONDOR_VM_START", "kvm", timeout=60) == (True, "1"), gahp.stderr_tail()
    assert status(gahp).startswith("STATUS=Running")

    daemon.stop()
    try:
        began = time.monotonic()
        status_id = gahp.submit("CONDOR_VM_STATUS", "1")
        time.sleep(1.0)
        loop_began = time.monotonic()
        assert_alive(gahp)
        loop_s = time.monotonic() - loop_began
        ok, text, _ = timed_result(gahp, status_id, timeout=CALL_TIMEOUT + SLACK)
        answered = time.monotonic() - began
        report("libvirtd SIGSTOP during STATUS", token=text, answer_s=round(answered, 2),
               commands_round_trip_ms=round(loop_s * 1e3, 1))
        assert (ok, text) == (False, "VMGAHP_ERR_INTERNAL")
        assert CALL_TIMEOUT - 1 < answered < CALL_TIMEOUT + SLACK
        assert_alive(gahp)
    finally:
        daemon.cont()
    text = wait_for_status(gahp, "Running", timeout=30)
    report("STATUS after SIGCONT", status=text.split()[0])
    quit_and_check(gahp, daemon)


# ------------------------------------------------------------------ endings
def _start_vm(tiny_guest: TinyGuest, work: Path, daemon: PrivateLibvirtd, gahps: list, cluster: int,
              launcher: tuple[str, ...] = ()) -> GahpProcess:
    tiny_guest.boot_disk(work / "boot.img", ticks=120)
    gahp = new_gahp(work, daemon, gahps, launcher=launcher)
    gahp.send_ad(ad(work, cluster))
    assert gahp.call("CONDOR_VM_START", "kvm", timeout=60) == (True, "1"), gahp.stderr_tail()
    assert daemon.domains() == [name_of(cluster)]
    return gahp


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("ending", ["starter_killed", "eof", "sigterm"])
def test_every_ending_leaves_zero_domains(tiny_guest: TinyGuest, private_libvirtd: PrivateLibvirtd,
                                          scratch: Path, gahps: list, ending: str) -> None:
    """The starter SIGKILLed (the gahp sees EOF on stdin, a broken stdout), stdin EOF,
    SIGTERM: the gahp destroys its domain and exits; nothing is left on libvirtd."""
    daemon = private_libvirtd
    cluster = CLUSTER_BASE + 4 + ["starter_killed", "eof", "sigterm"].index(ending)
    pid_file = scratch / "gahp.pid"
    launcher = (sys.executable, str(PIPE_PARENT), str(pid_file)) if ending == "starter_killed" else ()
    gahp = _start_vm(tiny_guest, scratch, daemon, gahps, cluster, launcher)
    gahp_pid = int(pid_file.read_text()) if launcher else gahp.proc.pid
    began = time.monotonic()
    if ending == "starter_killed":
        os.kill(gahp.proc.pid, signal.SIGKILL)  # the parent holding the pipes, by its pid
        gahp.proc.wait(timeout=10)
    elif ending == "eof":
        gahp.proc.stdin.close()
    else:
        gahp.signal(signal.SIGTERM)
    left = daemon.wait_for_no_domains(timeout=CLEANUP_TIMEOUT)
    cleaned = time.monotonic() - began
    exited = wait_until(lambda: _gone(gahp_pid), timeout=CLEANUP_TIMEOUT, every=0.1)
    report(f"ending {ending}", leftover_domains=len(left), domains_gone_s=round(cleaned, 2))
    if launcher and not exited:
        os.kill(gahp_pid, signal.SIGKILL)  # ours: do not leave it running
    assert left == []
    assert exited, "the gahp did not exit"
    if not launcher:
        assert gahp.wait(timeout=5) == 0
    assert any(e.get("event") == "vm_destroyed" for e in log_events(scratch)), (scratch / LOG).read_text()[-2000:]


# ------------------------------------------------- damaged checkpoint files
@pytest.fixture(scope="module")
def real_checkpoint(tiny_guest: TinyGuest, _private_libvirtd_session: PrivateLibvirtd) -> Iterator[Path]:
    """A real checkpoint of a running tiny guest, as the starter would ship it."""
    daemon = _private_libvirtd_session
    daemon.ensure_running()
    work = _scratch("vmgahp-fault-ckpt-")
    gahp = None
    try:
        tiny_guest.boot_disk(work / "boot.img", ticks=120)
        gahp = GahpProcess(work, **knobs(daemon))
        gahp.handshake()
        gahp.send_ad(ad(work, CLUSTER_BASE + 8, memory=256, checkpoint=True))
        assert gahp.call("CONDOR_VM_START", "kvm", timeout=60) == (True, "1"), gahp.stderr_tail()
        time.sleep(3.0)
        assert gahp.call("CONDOR_VM_CHECKPOINT", "1", timeout=60) == (True, "NULL"), gahp.stderr_tail()
        assert gahp.call("CONDOR_VM_STOP", "1", timeout=60) == (True, "NULL")
        assert gahp.reply("QUIT") == "S"
        assert gahp.wait(timeout=CLEANUP_TIMEOUT) == 0
        for name in CHECKPOINT_FILES:
            assert (work / name).is_file(), name
        yield work
    finally:
        if gahp is not None:
            gahp.kill()
        daemon.ensure_running()
        daemon.destroy_all()
        shutil.rmtree(work, ignore_errors=True)


def _damage(memory: Path, manifest: Path, how: str) -> None:
    size = memory.stat().st_size
    if how == "garbage":  # the whole memory state replaced by random bytes of the same size
        with open(memory, "r+b") as handle:
            for offset in range(0, size, 1 << 20):
                handle.write(os.urandom(min(1 << 20, size - offset)))
    elif how == "garbage_after_header":  # libvirt's header and XML intact, QEMU's stream garbage
        with open(memory, "r+b") as handle:
            handle.seek(64 << 10)
            left = size - (64 << 10)
            while left > 0:
                chunk = os.urandom(min(1 << 20, left))
                handle.write(chunk)
                left -= len(chunk)
    elif how == "truncated":  # cut in half; the manifest still says the full size
        os.truncate(memory, size // 2)
    elif how == "truncated_consistent":  # cut in half and the manifest agrees: QEMU reads a short stream
        os.truncate(memory, size // 2)
        data = json.loads(manifest.read_text())
        data["files"]["xen.mem.ckpt"] = {"size": size // 2, "sha256": hashlib.sha256(memory.read_bytes()).hexdigest()}
        manifest.write_text(json.dumps(data))
    elif how == "one_byte":  # size, libvirt's header and QEMU's stream intact: only the digest tells
        with open(memory, "r+b") as handle:
            handle.seek(size // 2)
            byte = handle.read(1)
            handle.seek(size // 2)
            handle.write(bytes([byte[0] ^ 0xFF]))
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["garbage", "garbage_after_header", "truncated", "truncated_consistent", "one_byte"])
def test_damaged_checkpoint_is_refused_without_a_cold_boot(real_checkpoint: Path, private_libvirtd: PrivateLibvirtd,
                                                           scratch: Path, gahps: list, how: str) -> None:
    """BAD_IMAGE (the job is held), no domain running, not one byte of what came back changed."""
    daemon = private_libvirtd
    for name in CHECKPOINT_FILES:  # the transfer into the next run's scratch dir
        shutil.copy2(real_checkpoint / name, scratch / name)
        os.chown(scratch / name, 1000, 1000)
    _damage(scratch / "xen.mem.ckpt", scratch / "vmgahp-checkpoint.json", how)
    before = sha256_tree(scratch)
    gahp = new_gahp(scratch, daemon, gahps)
    gahp.send_ad(ad(scratch, CLUSTER_BASE + 8, memory=256, checkpoint=True))  # as the starter: no TransferIntermediate
    began = time.monotonic()
    ok, text = gahp.call("CONDOR_VM_START", "kvm", timeout=60)
    elapsed = time.monotonic() - began
    events = [e.get("event") for e in log_events(scratch)]
    report(f"checkpoint memory {how}", token=text, answer_s=round(elapsed, 2),
           leftover_domains=len(daemon.domains()))
    assert (ok, text) == (False, "VMGAHP_ERR_BAD_IMAGE"), gahp.stderr_tail()
    assert daemon.domains() == []  # not restored, not cold-booted
    assert "domain_started" not in events and "domain_restored" not in events
    assert_alive(gahp)
    assert sha256_tree(scratch) == before
    quit_and_check(gahp, daemon)
