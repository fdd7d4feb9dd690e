"""The daemon process end to end: asynchrony, deadlines, endings, kill mode.

The fast ones run on libvirt's test hypervisor; the ones marked ``libvirtd``
run real QEMU guests (software emulation) under a real libvirtd.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from faults import FreezableProxy, silent_socket
from gahp_process import GAHP_ARGV, GahpProcess, gahp_env, job_ad

VM_NAME = "alice_example.org_42.0"


@pytest.fixture
def gahps():
    started: list[GahpProcess] = []
    yield started
    for gahp in started:
        gahp.kill()


def _running_commands() -> str:
    """Every process's command line (to see that the START's script still runs)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return "\n".join(found)


def test_status_is_answered_while_a_slow_start_runs(work: Path, gahps: list) -> None:
    """A STATUS result arrives while a START is still inside its (3 s) XML script:
    the order of the results shows it, not a stopwatch."""
    script = work / "slow-xml.sh"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        cat > /dev/null
        sleep 3
        echo "<domain type='kvm'><name>{VM_NAME}</name><memory>131072</memory>"
        echo "<os><type>hvm</type></os></domain>"
        """))
    script.chmod(0o755)
    gahp = GahpProcess(work, LIBVIRT_XML_SCRIPT=str(script))
    gahps.append(gahp)
    gahp.handshake()
    gahp.send_ad(job_ad(work))
    start_id = gahp.submit("CONDOR_VM_START", "kvm")
    deadline = time.monotonic() + 30
    while "/slow-xml.sh" not in _running_commands():
        assert time.monotonic() < deadline, "the START never reached its script"
        time.sleep(0.05)
    ok, text = gahp.call("CONDOR_VM_STATUS", "1")
    assert (ok, text) == (True, "STATUS=Stopped")  # VM 1 does not exist yet
    # A gahp that blocked on the START would only answer after it: the START is still running.
    assert "/slow-xml.sh" in _running_commands()
    assert gahp.result(start_id, timeout=30) == (True, "1")
    assert gahp.reply("QUIT") == "S"
    assert gahp.wait() == 0


def test_probe_gives_up_on_a_hung_libvirt_within_the_startd_budget(work: Path, tmp_path: Path) -> None:
    """A libvirtd that never answers costs the probe less than 5 s, exit 1, no stdout."""
    with silent_socket(tmp_path / "hung.sock") as uri:
        began = time.monotonic()
        done = subprocess.run(
            [*GAHP_ARGV, "-f", "-M", "0", "vmtype", "kvm"],
            env=gahp_env(work, VM_KVM_LIBVIRT_URI=uri),
            capture_output=True,
            timeout=30,
        )
        elapsed = time.monotonic() - began
    assert done.returncode == 1
    assert done.stdout == b""
    assert elapsed < 5.0, f"probe took {elapsed:.1f} s"
    assert "did not finish" in (work / "vmgahp.log").read_text()


def test_server_mode_refuses_to_start_on_a_hung_libvirt(work: Path, tmp_path: Path) -> None:
    """No banner, exit 1 when the host check cannot reach the hypervisor."""
    with silent_socket(tmp_path / "hung.sock") as uri:
        done = subprocess.run(
            [*GAHP_ARGV, "-f", "-M", "3"],
            env=gahp_env(work, VM_KVM_LIBVIRT_URI=uri, VMGAHP_WORKING_DIR=str(work)),
            input=b"COMMANDS\r\n",
            capture_output=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stdout == b""


# --------------------------------------------------------------- real guests
def _domain_names(uri: str) -> set[str]:
    import libvirt

    conn = libvirt.open(uri)
    try:
        return {dom.name() for dom in conn.listAllDomains()}
    finally:
        conn.close()


def _start_real_vm(work: Path, gahps: list, uri: str, **knobs: str) -> GahpProcess:
    gahp = GahpProcess(work, VM_KVM_LIBVIRT_URI=uri, VM_KVM_DOMAIN_TYPE="qemu", **knobs)
    gahps.append(gahp)
    gahp.handshake()
    gahp.send_ad(job_ad(work, JobVMMemory="64"))
    assert gahp.call("CONDOR_VM_START", "kvm") == (True, "1")
    assert VM_NAME in _domain_names(uri)
    return gahp


@pytest.mark.libvirtd
@pytest.mark.parametrize("ending", ["QUIT", "EOF", "SIGTERM"])
def test_every_ending_destroys_the_running_vm(work: Path, gahps: list, libvirt_uri: str, ending: str) -> None:
    """QUIT, stdin EOF and SIGTERM each leave no domain behind and exit 0."""
    gahp = _start_real_vm(work, gahps, libvirt_uri)
    if ending == "QUIT":
        assert gahp.reply("QUIT") == "S"
    elif ending == "EOF":
        gahp.proc.stdin.close()
    else:
        gahp.signal(signal.SIGTERM)
    assert gahp.wait(timeout=60) == 0
    assert gahp.proc.stdout.read() == b""
    assert VM_NAME not in _domain_names(libvirt_uri)


@pytest.mark.libvirtd
def test_kill_mode_destroys_the_named_domain(work: Path, gahps: list, libvirt_uri: str) -> None:
    """``-M 4 vmtype kvm match NAME`` destroys a domain another gahp left running."""
    gahp = _start_real_vm(work, gahps, libvirt_uri)
    gahp.kill()  # SIGKILL: the gahp cannot clean up
    assert VM_NAME in _domain_names(libvirt_uri)
    done = subprocess.run(
        [*GAHP_ARGV, "-f", "-M", "4", "vmtype", "kvm", "match", VM_NAME],
        env=gahp_env(work, VM_KVM_LIBVIRT_URI=libvirt_uri),
        capture_output=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, b"")
    assert VM_NAME not in _domain_names(libvirt_uri)


@pytest.mark.libvirtd
def test_hung_libvirt_fails_the_request_and_orphans_nothing(
    work: Path, tmp_path: Path, gahps: list, libvirt_uri: str, libvirt_socket: str
) -> None:
    """A hypervisor that stops answering gets a token after the deadline; the gahp lives on."""
    proxy = FreezableProxy(tmp_path / "proxy.sock", libvirt_socket)
    try:
        gahp = GahpProcess(
            work, VM_KVM_LIBVIRT_URI=proxy.uri, VM_KVM_DOMAIN_TYPE="qemu", VM_GAHP_CALL_TIMEOUT="3"
        )
        gahps.append(gahp)
        gahp.handshake()
        gahp.send_ad(job_ad(work, JobVMMemory="64"))
        proxy.freeze()
        began = time.monotonic()
        start_id = gahp.submit("CONDOR_VM_START", "kvm")
        # The command loop still answers while the START is stuck.
        assert gahp.reply("COMMANDS").startswith("S ASYNC_MODE_ON")
        assert gahp.result(start_id, timeout=30) == (False, "VMGAHP_ERR_INTERNAL")
        assert 2.5 < time.monotonic() - began < 15
        proxy.thaw()
        # The held createXML now reaches libvirtd and the VM comes up after
        # its START was given up: the gahp must destroy it, not orphan it.
        log = work / "vmgahp.log"
        deadline = time.monotonic() + 30
        while "late_start_destroyed" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "late_start_destroyed" in log.read_text()
        assert VM_NAME not in _domain_names(libvirt_uri)
        assert gahp.reply("QUIT") == "S"
        assert gahp.wait() == 0
    finally:
        proxy.close()


@pytest.mark.libvirtd
def test_an_image_qemu_cannot_open_holds_the_job_and_leaves_no_domain(
    work: Path, gahps: list, libvirt_uri: str
) -> None:
    """A disk declared qcow2 that is not one: BAD_IMAGE (a hold), a log line, no domain left."""
    gahp = GahpProcess(work, VM_KVM_LIBVIRT_URI=libvirt_uri, VM_KVM_DOMAIN_TYPE="qemu")
    gahps.append(gahp)
    gahp.handshake()
    gahp.send_ad(job_ad(work, disk="disk.img:vda:w:qcow2", JobVMMemory="64"))
    assert gahp.call("CONDOR_VM_START", "kvm") == (False, "VMGAHP_ERR_BAD_IMAGE")
    log = (work / "vmgahp.log").read_text()
    assert "not in qcow2 format" in log.lower()
    assert VM_NAME not in _domain_names(libvirt_uri)
    assert gahp.reply("QUIT") == "S"
    assert gahp.wait() == 0


def test_one_version_on_the_wire(tmp_path: Path) -> None:
    """The banner's version, the VERSION reply and the probe's VM_GAHP_VERSION agree
    (the VM GAHP protocol version); the release is the banner's name field."""
    import vmgahp

    gahp = GahpProcess(tmp_path)
    try:
        banner = gahp.readline()
        version = banner.split()[1]
        assert banner.endswith(f" vmgahp-{vmgahp.__version__} $")
        assert gahp.reply("VERSION") == "S " + banner
    finally:
        gahp.kill()
    probe = subprocess.run([sys.executable, "-m", "vmgahp", "-f", "-M", "0", "vmtype", "kvm"],
                           env=gahp_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert f'VM_GAHP_VERSION = "{version}"' in probe.stdout.splitlines()


@pytest.mark.parametrize("stdin", ["/dev/null", "file"])
def test_stdin_that_epoll_refuses_is_read_to_its_end(tmp_path: Path, stdin: str) -> None:
    """A gahp run by hand with stdin from /dev/null or a file (epoll refuses
    both) answers what it reads and ends cleanly at EOF - no crash."""
    source = tmp_path / "lines"
    source.write_bytes(b"COMMANDS\r\nVERSION\r\n")
    with open(stdin if stdin == "/dev/null" else source, "rb") as handle:
        done = subprocess.run([sys.executable, "-m", "vmgahp", "-f", "-M", "3"], stdin=handle,
                              env=gahp_env(tmp_path), cwd=tmp_path, capture_output=True, timeout=60)
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 0, (done.stderr, (tmp_path / "vmgahp.log").read_text()[-2000:])
    assert lines[0].startswith("$VMGahpVersion ")
    assert len(lines) == (1 if stdin == "/dev/null" else 3)
    assert "daemon_crashed" not in (tmp_path / "vmgahp.log").read_text()


@pytest.mark.libvirtd
def test_a_saturated_worker_pool_answers_every_request_by_its_deadline(
    work: Path, tmp_path: Path, gahps: list, libvirt_socket: str
) -> None:
    """One worker, a hung libvirtd and many STATUS requests: each is answered with a
    token by its own deadline, counted from when it was accepted (not one deadline
    after another), and past MAX_BACKLOG unfinished requests at once - none is dropped."""
    from vmgahp.vm.runtime import MAX_BACKLOG

    proxy = FreezableProxy(tmp_path / "proxy.sock", libvirt_socket)
    try:
        gahp = GahpProcess(work, VM_KVM_LIBVIRT_URI=proxy.uri, VM_KVM_DOMAIN_TYPE="qemu",
                           VM_GAHP_CALL_TIMEOUT="3", VM_GAHP_WORKERS="1")
        gahps.append(gahp)
        gahp.handshake()
        gahp.send_ad(job_ad(work, JobVMMemory="64"))
        assert gahp.call("CONDOR_VM_START", "kvm") == (True, "1")
        proxy.freeze()
        began = time.monotonic()
        ids = [gahp.submit("CONDOR_VM_STATUS", "1") for _ in range(MAX_BACKLOG + 6)]
        results = {request_id: gahp.result(request_id, timeout=30) for request_id in ids}
        elapsed = time.monotonic() - began
        assert set(results.values()) == {(False, "VMGAHP_ERR_INTERNAL")}
        assert elapsed < 3 + 6, elapsed  # sequential deadlines would take (MAX_BACKLOG + 6) * 3 s
        assert "request_refused" in (work / "vmgahp.log").read_text()  # the overflow, answered at once
        proxy.thaw()
        ok, text = gahp.call("CONDOR_VM_STATUS", "1")
        assert ok and text.startswith("STATUS=Running"), text
        assert gahp.reply("QUIT") == "S"
        assert gahp.wait() == 0
    finally:
        proxy.close()
