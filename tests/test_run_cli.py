"""``vmgahp run`` end to end: the real daemon on libvirt's test hypervisor.

On ``test:///default`` a VM never powers itself off, so the "until Stopped"
path is driven here by a small scripted gahp (``--gahp``, the starter's
VM_GAHP_SERVER); the real daemon covers start, vacate, checkpoint, resume and
START failures. A real guest running to completion is tested elsewhere.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest

from vmgahp.protocol.client import argv_words as split_words  # the starter's read_argv
from vmgahp.run import scratch
from vmgahp.run.cli import run_main
from vmgahp.run.starter import explain_start_failure

TOP = Path(__file__).resolve().parents[1]
VMGAHP = (sys.executable, "-m", "vmgahp")  # this interpreter's vmgahp

JOB = """\
universe   = vm
vm_type    = kvm
executable = tester
vm_memory  = 128
vm_disk    = disk.img:vda:w:raw
{transfer}
{extra}
queue
"""


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    """Where scratch directories go: somewhere the job user (uid 1000 under root) can reach."""
    path = Path(tempfile.mkdtemp(prefix="vmgahp-run-test-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(scratch_root: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("_CONDOR_", "VMGAHP_", "CONDOR_CONFIG"))}
    clean.update(
        CONDOR_CONFIG="/dev/null",
        _CONDOR_VM_MEMORY="1024",
        _CONDOR_VM_KVM_LIBVIRT_URI="test:///default",
        TMPDIR=str(scratch_root),
    )
    return clean


def job_dir(tmp_path: Path, extra: str = "", disk: bool = True) -> Path:
    work = tmp_path / "job"
    work.mkdir()
    if disk:
        with open(work / "disk.img", "wb") as handle:
            handle.truncate(8 << 20)  # sparse
    transfer = "transfer_input_files = disk.img" if disk else ""
    (work / "job.sub").write_text(JOB.format(transfer=transfer, extra=textwrap.dedent(extra)))
    return work / "job.sub"


class Run:
    """``vmgahp run`` as a child process, its output read line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*VMGAHP, "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
        )
        self.lines: list[str] = []

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        assert self.proc.stdout is not None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} never printed; got:\n{''.join(self.lines)}{self.proc.stderr.read()}")

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "".join(self.lines) + out, err


def run(args: list[str], env: dict[str, str], timeout: float = 90.0) -> tuple[int, str, str]:
    done = subprocess.run([*VMGAHP, "run", *args], capture_output=True, text=True, env=env, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def leftover_scratch(env: dict[str, str]) -> list[str]:
    return [p.name for p in Path(env["TMPDIR"]).iterdir() if p.name.startswith("dir_vmgahp-run-")]


# ------------------------------------------------------------- real daemon


def test_sigint_vacates_with_a_checkpoint_then_resume(tmp_path: Path, env: dict[str, str]) -> None:
    sub = job_dir(tmp_path, "vm_checkpoint = true\nvm_snapshot_disk = true")
    out = tmp_path / "out"
    child = Run([str(sub), "--output", str(out), "--status-interval", "0.3"], env)
    child.wait_for("Running")
    child.proc.send_signal(signal.SIGINT)
    code, stdout, stderr = child.finish()
    assert code == 130, stdout + stderr
    assert "== vacated (Ctrl-C) ==" in stdout
    assert "wall time" in stdout and "CPU time" in stdout
    ckpt = out / "checkpoint"
    files = sorted(p.name for p in ckpt.iterdir())
    expected = {"xen.mem.ckpt", "xen.mem.ckpt.timestamp", "vmgahp-checkpoint.json", "vmgahp-overlay-vda.qcow2"}
    assert expected <= set(files)
    assert "disk.img" not in files  # unchanged input: not part of the checkpoint
    assert not any(name.startswith("_vmgahp_run") for name in files)
    assert f"resume with  vmgahp run {sub} --resume {ckpt} --output {out}" in stdout
    assert leftover_scratch(env) == []
    if os.geteuid() == 0:
        assert (ckpt / "xen.mem.ckpt").stat().st_uid == 1000  # the job user's, as the shadow writes it

    # Resume: the files come back into the scratch dir; --max-wall vacates again.
    args = [str(sub), "--output", str(out), "--resume", str(ckpt), "--status-interval", "0.3", "--max-wall", "1"]
    code, stdout, stderr = run([*args, "-v"], env)
    assert code == 124, stdout + stderr
    assert "== vacated (--max-wall" in stdout
    assert "> TransferIntermediate" not in stderr  # the starter never sends it
    assert (out / "checkpoint" / "xen.mem.ckpt").exists()  # replaced by the new checkpoint


def test_sigint_without_checkpoint_just_stops(tmp_path: Path, env: dict[str, str]) -> None:
    sub = job_dir(tmp_path)
    child = Run([str(sub), "--status-interval", "0.3", "-v"], env)
    child.wait_for("Running")
    child.proc.send_signal(signal.SIGINT)
    code, stdout, stderr = child.finish()
    assert code == 130, stdout + stderr
    assert "== vacated (Ctrl-C) ==" in stdout
    assert "checkpoint   none" in stdout
    wire = [line[2:] for line in stderr.splitlines() if line.startswith("> ")]
    assert not any(line.startswith("CONDOR_VM_CHECKPOINT") for line in wire)
    stop = next(i for i, line in enumerate(wire) if line.startswith("CONDOR_VM_STOP "))
    assert wire[-1] == "QUIT" and stop < len(wire) - 1
    assert not (sub.parent / "tester.out" / "checkpoint").exists()
    assert leftover_scratch(env) == []


def test_max_wall_vacates(tmp_path: Path, env: dict[str, str]) -> None:
    sub = job_dir(tmp_path)
    started = time.monotonic()
    code, stdout, stderr = run([str(sub), "--status-interval", "0.2", "--max-wall", "1.5"], env)
    assert code == 124, stdout + stderr
    assert time.monotonic() - started < 30
    assert "--max-wall 1.5 s reached" in stdout and "== vacated (--max-wall" in stdout


def test_bad_submit_file_exits_2_naming_the_line(tmp_path: Path, env: dict[str, str]) -> None:
    sub = job_dir(tmp_path)
    sub.write_text(sub.read_text().replace("disk.img:vda:w:raw", "disk.img:vda"))
    code, stdout, stderr = run([str(sub)], env)
    assert code == 2
    assert f"{sub}:5: vm_disk item 'disk.img:vda' has 2 fields" in stderr
    assert stdout == ""
    sub.write_text("universe = vm\nvm_type kvm\nqueue\n")
    code, _, stderr = run([str(sub)], env)
    assert code == 2 and f"{sub}:2: expected 'command = value'" in stderr
    code, _, stderr = run([str(sub), "--status-interval", "0"], env)
    assert code == 2 and "must be > 0" in stderr


def test_start_failure_that_holds_the_job(tmp_path: Path, env: dict[str, str]) -> None:
    sub = job_dir(tmp_path, disk=False)
    sub.write_text(sub.read_text().replace("disk.img:vda:w:raw", f"{tmp_path}/missing.img:vda:w"))
    code, stdout, stderr = run([str(sub)], env)
    assert code == 3, stdout + stderr
    assert "the VM did not start: VMGAHP_ERR_JOBCLASSAD_KVM_INVALID_DISK_PARAM" in stderr
    assert "HELD" in stderr and "subcode 10" in stderr
    assert "gahp log: request_failed:" in stderr and "missing.img" in stderr
    assert "scratch kept" in stderr  # for a look at the gahp's log


def test_start_failure_that_requeues_the_job(tmp_path: Path, env: dict[str, str]) -> None:
    sub = job_dir(tmp_path)
    sub.write_text(sub.read_text().replace("vm_memory  = 128", "vm_memory  = 4G"))
    code, stdout, stderr = run([str(sub)], env)
    assert code == 4, stdout + stderr
    assert "VMGAHP_ERR_JOBCLASSAD_TOO_MUCH_MEMORY_REQUEST" in stderr and "REQUEUED" in stderr


def test_gahp_that_refuses_to_start(tmp_path: Path, env: dict[str, str]) -> None:
    sub = job_dir(tmp_path)
    env["_CONDOR_VM_MEMORY"] = "0"  # configured, and invalid: no default replaces it
    code, stdout, stderr = run([str(sub)], env)
    assert code == 1, stdout + stderr
    assert "refused to start" in stderr and "VM_MEMORY" in stderr


def test_defaults_without_configuration(tmp_path: Path, env: dict[str, str]) -> None:
    """No VM_MEMORY and no domain type configured: vmgahp run picks them from this
    host, says so, and the job runs (vacated here by --max-wall)."""
    sub = job_dir(tmp_path)
    del env["_CONDOR_VM_MEMORY"]
    code, stdout, stderr = run([str(sub), "--max-wall", "1", "--status-interval", "0.2"], env)
    assert code == 124, stdout + stderr
    total = int(open("/proc/meminfo").readline().split()[1]) // 1024
    assert f"default      VM_MEMORY = {total * 3 // 4} (3/4 of this host's {total} MiB" in stdout
    assert "default      VM_KVM_DOMAIN_TYPE = " in stdout
    assert "VM_KVM_LIBVIRT_URI" not in stdout  # configured (test:///default): not replaced
    assert "== vacated (--max-wall 1 s) ==" in stdout


# ---------------------------------------------------------- scripted gahp

FAKE_GAHP = r'''#!PYTHON
"""A scripted gahp: the starter's conversation, a VM that stops after 2 polls."""
import os, sys
record = open(os.environ["FAKE_RECORD"], "a")
record.write("ARGV " + " ".join(sys.argv[1:]) + "\n"); record.flush()
if "4" in sys.argv[sys.argv.index("-M") + 1:sys.argv.index("-M") + 2]:
    sys.exit(0)  # kill mode
mode = os.environ.get("FAKE_MODE", "stop")
work = os.environ["VMGAHP_WORKING_DIR"]
out = sys.stdout
def say(text):
    out.write(text + "\n"); out.flush()
say("$VMGahpVersion 0.0.1 May 1 2007 Condor\\ VMGAHP $")
results, signalled, in_ad, polls = [], False, False, 0
def result(line):
    global signalled
    results.append(line)
    if not signalled:
        signalled = True
        say("R")
for raw in sys.stdin.buffer:
    record.write(raw.decode()); record.flush()
    line = raw.decode().rstrip("\r\n")
    if in_ad:
        if line == "CLASSAD_END":
            in_ad = False
            say("S")
        continue
    words = line.split(" ")
    cmd = words[0]
    if cmd == "COMMANDS":
        say("S ASYNC_MODE_ON ASYNC_MODE_OFF CONDOR_VM_START CONDOR_VM_STOP CONDOR_VM_SUSPEND CONDOR_VM_SOFT_SUSPEND "
            "CONDOR_VM_RESUME CONDOR_VM_CHECKPOINT CONDOR_VM_STATUS CONDOR_VM_GETPID QUIT VERSION COMMANDS "
            "SUPPORT_VMS RESULTS CLASSAD CLASSAD_END")
    elif cmd == "SUPPORT_VMS":
        say("S xen kvm")
    elif cmd == "ASYNC_MODE_ON":
        signalled = False
        say("S")
    elif cmd == "CLASSAD":
        in_ad = True
        say("S")
    elif cmd == "RESULTS":
        say(f"S {len(results)}")
        for item in results:
            say(item)
        results, signalled = [], False
    elif cmd == "QUIT":
        say("S")
        sys.exit(0)
    elif cmd == "CONDOR_VM_START":
        say("S")
        with open(os.path.join(work, "result.txt"), "w") as handle:
            handle.write("done\n")
        with open(os.path.join(work, "disk.img"), "r+b") as handle:
            handle.seek(4096)
            handle.write(b"changed by the guest")
        result(f"{words[1]} 0 1")
    elif cmd == "CONDOR_VM_STATUS":
        say("S")
        polls += 1
        if polls > 2:
            result(f"{words[1]} 0 STATUS=Stopped")
        else:
            result(f"{words[1]} 0 STATUS=Running CPUUTILIZATION=0.5 CPUTIME={polls * 1.25} MEMORY=131072")
    elif cmd == "CONDOR_VM_CHECKPOINT" and mode == "hang-checkpoint":
        say("S")  # ... and never a result
    elif cmd.startswith("CONDOR_VM_"):
        say("S")
        result(f"{words[1]} 0 {'0' if cmd == 'CONDOR_VM_GETPID' else 'NULL'}")
    else:
        say("E")
'''


@pytest.fixture
def fake_gahp(tmp_path: Path, env: dict[str, str]) -> Path:
    path = tmp_path / "fake-gahp"
    path.write_text(FAKE_GAHP.replace("PYTHON", sys.executable, 1))
    path.chmod(0o755)
    env["FAKE_RECORD"] = str(tmp_path / "record.txt")
    return path


def test_vm_that_stops_by_itself_brings_back_its_output(tmp_path: Path, env: dict[str, str], fake_gahp: Path) -> None:
    sub = job_dir(tmp_path, "transfer_input_files = disk.img, notes.txt")
    (sub.parent / "notes.txt").write_text("unchanged input\n")
    code, stdout, stderr = run([str(sub), "--gahp", str(fake_gahp), "--status-interval", "0.1"], env)
    assert code == 0, stdout + stderr
    assert "== the VM stopped by itself ==" in stdout
    assert "exit status  0" in stdout
    assert "CPU time     2.5 s" in stdout  # the last Running status's CPUTIME
    out = sub.parent / "tester.out"
    assert sorted(p.name for p in out.iterdir()) == ["disk.img", "result.txt"]  # new or changed only
    disk = out / "disk.img"
    assert disk.stat().st_size == 8 << 20
    assert disk.stat().st_blocks * 512 < 1 << 20  # the holes stayed holes
    with open(disk, "rb") as handle:
        handle.seek(4096)
        assert handle.read(20) == b"changed by the guest"
    assert (sub.parent / "disk.img").read_bytes()[4096:4100] == b"\0\0\0\0"  # the submit side's is untouched
    assert leftover_scratch(env) == []

    # The starter's exact sequence, CRLF-terminated, ids from 2.
    record = (tmp_path / "record.txt").read_bytes().decode()
    server = record.split("ARGV ")[1]
    argv, *lines = server.split("\n")
    assert argv == "-f -M 3"
    assert all(line.endswith("\r") for line in lines if line)
    wire = [line.rstrip("\r") for line in lines if line]
    assert wire[:4] == ["COMMANDS", "SUPPORT_VMS", "ASYNC_MODE_ON", "CLASSAD"]
    assert wire[4].startswith('VM_WORKING_DIR = "') and "dir_vmgahp-run-" in wire[4]
    end = wire.index("CLASSAD_END")
    assert "JobUniverse = 13" in wire[5:end] and 'JobVMType = "kvm"' in wire[5:end]
    assert wire[end + 1] == "CONDOR_VM_START 2 kvm"
    commands = [line for line in wire[end + 1 :] if line != "RESULTS"]
    assert commands == ["CONDOR_VM_START 2 kvm", "CONDOR_VM_GETPID 3 1", "CONDOR_VM_STATUS 4 1",
                        "CONDOR_VM_STATUS 5 1", "CONDOR_VM_STATUS 6 1", "QUIT"]  # fmt: skip
    assert record.rstrip().splitlines()[-1].startswith("ARGV -f -M 4 vmtype kvm match ")
    assert record.rstrip().splitlines()[-1].endswith("_1.0")


def test_vm_no_output_vm(tmp_path: Path, env: dict[str, str], fake_gahp: Path) -> None:
    sub = job_dir(tmp_path, "vm_no_output_vm = true")
    code, stdout, stderr = run([str(sub), "--gahp", str(fake_gahp), "--status-interval", "0.1"], env)
    assert code == 0, stdout + stderr
    assert "output       none (vm_no_output_vm = true)" in stdout
    assert not (sub.parent / "tester.out").exists()


def test_second_sigint_kills_hard(tmp_path: Path, env: dict[str, str], fake_gahp: Path) -> None:
    env["FAKE_MODE"] = "hang-checkpoint"
    sub = job_dir(tmp_path, "vm_checkpoint = true\nvm_snapshot_disk = true")
    sub.write_text(sub.read_text())
    # Slow polls, so the VM is still "Running" when the interrupts come.
    child = Run([str(sub), "--gahp", str(fake_gahp), "--status-interval", "30"], env)
    child.wait_for("polling its status")
    child.proc.send_signal(signal.SIGINT)
    child.wait_for("vacating with a checkpoint")
    time.sleep(0.5)  # CONDOR_VM_CHECKPOINT hangs
    child.proc.send_signal(signal.SIGINT)
    code, stdout, stderr = child.finish(timeout=60)
    assert code == 130, stdout + stderr
    assert "killing the VM" in stdout and "== killed (interrupted twice) ==" in stdout
    record = (tmp_path / "record.txt").read_bytes().decode()
    assert "QUIT\r\n" in record
    assert record.rstrip().splitlines()[-1].startswith("ARGV -f -M 4 vmtype kvm match ")


def test_run_main_in_process(tmp_path: Path, env: dict[str, str], fake_gahp: Path,
                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in [n for n in os.environ if n.startswith(("_CONDOR_", "VMGAHP_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    sub = job_dir(tmp_path)
    assert run_main([str(sub), "--gahp", str(fake_gahp), "--status-interval", "0.1"]) == 0
    assert "== the VM stopped by itself ==" in capsys.readouterr().out
    assert run_main(["--help"]) == 0
    assert run_main([]) == 2


# ---------------------------------------------------------------- helpers


def test_sparse_copy(tmp_path: Path) -> None:
    src = tmp_path / "big.img"
    with open(src, "wb") as handle:
        handle.truncate(64 << 20)
        handle.seek(10 << 20)
        handle.write(b"data" * 1024)
        handle.seek((64 << 20) - 5)
        handle.write(b"tail!")
    dst = tmp_path / "copy.img"
    scratch.copy_file(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_blocks * 512 < 2 << 20
    assert dst.stat().st_mtime_ns == src.stat().st_mtime_ns


def test_changed_files(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    before = scratch.snapshot(tmp_path)
    (tmp_path / "b").write_text("bb")
    (tmp_path / "c").write_text("c")
    (tmp_path / scratch.GAHP_LOG).write_text("log")
    assert scratch.changed_files(tmp_path, before) == ["b", "c"]
    assert scratch.changed_files(tmp_path, before, keep=["a"]) == ["a", "b", "c"]


def test_job_user(tmp_path: Path) -> None:
    user = scratch.job_user(tmp_path, {})
    if os.geteuid() != 0:
        assert user.uid == os.getuid()
        return
    assert user.uid == (tmp_path.stat().st_uid or scratch.FALLBACK_UID)
    assert scratch.job_user(tmp_path, {"SUDO_UID": "1234", "SUDO_GID": "99"}).uid == 1234
    os.chown(tmp_path, 4321, 4321)
    assert (scratch.job_user(tmp_path, {}).uid, scratch.job_user(tmp_path, {}).gid) == (4321, 4321)


def test_start_failure_explanations() -> None:
    held, text = explain_start_failure("VMGAHP_ERR_BAD_IMAGE")
    assert held and "subcode 12" in text
    held, text = explain_start_failure("VMGAHP_ERR_INTERNAL")
    assert not held and "REQUEUED" in text


def test_split_words_as_the_starter() -> None:
    assert split_words("7 1 STATUS=Running\\ CPUTIME=1") == ["7", "1", "STATUS=Running CPUTIME=1"]
    assert split_words("S 2") == ["S", "2"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the scratch directory to another user")
def test_scratch_the_job_user_cannot_reach(tmp_path: Path, env: dict[str, str]) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    sub = job_dir(tmp_path)
    code, stdout, stderr = run([str(sub), "--scratch-root", str(private)], env)
    assert code == 1, stdout + stderr
    assert "cannot reach" in stderr and "--scratch-root" in stderr
    assert list(private.iterdir()) == []
