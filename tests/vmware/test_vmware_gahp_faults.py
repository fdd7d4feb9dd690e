"""The vmware gahp when vSphere fails: wrong password, no server, a server that
never answers, TLS trust, a simulator SIGKILLed mid-START, sessions that expire.

Every failure must be clean: the probe exits 1 within the startd's 5 s with
nothing on stdout, a START gets a token within its deadline and the gahp
goes on answering, and the password appears in no output at all.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from contextlib import contextmanager

import pytest
from gahp_rig import VM_NAME, Rig, all_output, find_vm, job_folders

pytestmark = pytest.mark.vcsim

PROBE_BUDGET = 5.0  # the startd's


@contextmanager
def silent_server():
    """A TCP port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


def timed_probe(rig: Rig, **knobs: str):
    began = time.monotonic()
    done = rig.probe(**knobs)
    return done, time.monotonic() - began


def test_probe_prints_the_machine_ad(rig):
    done, took = timed_probe(rig)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ['VM_GAHP_VERSION = "0.0.1"', 'VM_Type = "vmware"', "VM_Memory = 1024",
                                        "VM_Networking = TRUE", 'VM_Networking_Types = "nat"']
    assert took < PROBE_BUDGET


def test_probe_drops_a_port_group_the_server_lacks(rig):
    done, _ = timed_probe(rig, VM_NETWORKING_TYPE="nat,bridge", VMWARE_BRIDGE_PORTGROUP="no-such-portgroup")
    assert done.returncode == 0, done.stderr
    assert 'VM_Networking_Types = "nat"' in done.stdout
    assert "no-such-portgroup" in rig.log.read_text()


def test_wrong_password_fails_cleanly_and_never_shows_it(vcsim, scratch):
    wrong = "Wrong-" + vcsim.password[::-1]
    rig = Rig(vcsim, scratch, password=wrong)
    done, took = timed_probe(rig)
    assert done.returncode == 1 and done.stdout == "" and took < PROBE_BUDGET
    log = rig.log.read_text()
    assert "user name or password refused" in log
    # Server mode: the start-up check refuses too, before any banner.
    from gahp_process import GahpProcess

    gahp = GahpProcess(rig.work, **rig.knobs())
    try:
        assert gahp.wait(30) == 1
        out = gahp.proc.stdout.read().decode()
        assert out == ""
        everything = done.stdout + done.stderr + log + out + all_output(gahp, rig)
        for secret in (wrong, vcsim.password):
            assert secret not in everything
            assert secret.replace("&", "&amp;").replace("<", "&lt;") not in everything
    finally:
        gahp.kill()


@pytest.mark.parametrize("how", ["refused", "silent"])
def test_probe_without_a_server_fails_within_the_budget(rig, how):
    if how == "refused":
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # nothing listens there now
        done, took = timed_probe(rig, VMWARE_VSPHERE_URL=f"https://127.0.0.1:{port}/sdk")
    else:
        with silent_server() as port:
            done, took = timed_probe(rig, VMWARE_VSPHERE_URL=f"https://127.0.0.1:{port}/sdk")
    assert done.returncode == 1 and done.stdout == "", done.stdout
    assert took < PROBE_BUDGET
    assert "vSphere at https://127.0.0.1" in rig.log.read_text()


def test_tls_needs_the_ca_file_or_a_pin(rig, vcsim):
    """pyVmomi would skip verification for 127.0.0.1 without an SSL context: vmgahp always passes one."""
    done, _ = timed_probe(rig, VMWARE_CA_FILE="")
    assert done.returncode == 1 and done.stdout == ""
    assert "server certificate not trusted" in rig.log.read_text()
    done, _ = timed_probe(rig, VMWARE_CA_FILE="", VMWARE_THUMBPRINT=vcsim.thumbprint)
    assert done.returncode == 0, done.stderr
    wrong_pin = ":".join(["AB"] * 32)
    done, _ = timed_probe(rig, VMWARE_CA_FILE="", VMWARE_THUMBPRINT=wrong_pin)
    assert done.returncode == 1
    done, _ = timed_probe(rig, VMWARE_CA_FILE="", VMWARE_TLS_VERIFY="false")
    assert done.returncode == 0, done.stderr
    assert "vsphere_tls_unverified" in rig.log.read_text()


def test_obsolete_script_knobs_are_ignored_with_a_log_line(rig):
    done, _ = timed_probe(rig, VMWARE_PERL="perl", VMWARE_SCRIPT="/usr/sbin/condor_vm_vmware")
    assert done.returncode == 0, done.stderr
    log = rig.log.read_text()
    assert "VMWARE_PERL is ignored" in log and "VMWARE_SCRIPT is ignored" in log


def test_simulator_killed_mid_start(vcsim_factory, scratch):
    """PowerOnVM_Task answers after 6 s; the simulator dies at 1.5 s: a token at
    once (well within the deadline), and the gahp keeps answering."""
    sim = vcsim_factory("-method-delay", "PowerOnVM_Task=6000")
    rig = Rig(sim, scratch)
    gahp = rig.gahp(VMWARE_RESOURCE_POOL="DC0_H0/Resources")
    try:
        gahp.send_ad(rig.ad())
        request = gahp.submit("CONDOR_VM_START", "vmware")
        time.sleep(1.5)
        sim.kill()
        began = time.monotonic()
        ok, text = gahp.result(request, timeout=30)
        assert (ok, text) == (False, "VMGAHP_ERR_INTERNAL")
        assert time.monotonic() - began < 20  # CLEANUP_SECONDS at most: the undo's own budget
        assert gahp.reply("COMMANDS").startswith("S ASYNC_MODE_ON")
        assert gahp.call("CONDOR_VM_STATUS", "1") == (True, "STATUS=Stopped")
        assert gahp.reply("QUIT") == "S"
        assert gahp.wait(30) == 0
        assert sim.password not in all_output(gahp, rig)
    finally:
        gahp.kill()


def test_session_expiry_logs_in_again(vcsim_idle, scratch, connect):
    """Sessions expire after 1 s idle: each command after a pause logs in anew."""
    rig = Rig(vcsim_idle, scratch)
    gahp = rig.gahp()
    try:
        gahp.send_ad(rig.ad())
        assert gahp.call("CONDOR_VM_START", "vmware") == (True, "1")
        time.sleep(2.5)
        ok, text = gahp.call("CONDOR_VM_STATUS", "1")
        assert ok and re.match(r"(MAC=\S+ )?(IP=\S+ )?STATUS=Running( |$)", text), text + rig.log.read_text()[-3000:]
        time.sleep(2.5)
        assert gahp.call("CONDOR_VM_STOP", "1")[0]
        log = rig.log.read_text()
        assert log.count('"vsphere_session_expired"') >= 1, log[-3000:]
        assert log.count('"vsphere_login"') >= 2
        vs = connect(vcsim_idle)
        assert not job_folders(vs.placement(pool="DC0_H0/Resources"))
    finally:
        gahp.kill()


def test_kill_mode_removes_a_vm_its_gahp_left(rig, client):
    """The gahp dies without cleaning up; the startd's kill mode powers the VM off,
    unregisters it and deletes vmgahp's folder."""
    import signal
    import subprocess

    from gahp_process import GAHP_ARGV, gahp_env

    vs, where = client
    gahp = rig.gahp()
    try:
        gahp.send_ad(rig.ad())
        assert gahp.call("CONDOR_VM_START", "vmware") == (True, "1")
        gahp.signal(signal.SIGKILL)
        gahp.wait(10)
    finally:
        gahp.kill()
    vm, folder = find_vm(vs, where)
    assert vs.power_state(vm) == "poweredOn"
    done = subprocess.run([*GAHP_ARGV, "-f", "-M", "4", "vmtype", "vmware", "match", VM_NAME],
                          env=gahp_env(rig.work, **rig.knobs()), cwd=rig.work, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert vs.find_vm(where, f"{folder.name}/job.vmx") is None and not job_folders(where)


def test_probe_names_the_pools_when_none_is_configured(rig):
    """Unset placement knobs mean "the only one there is": the vCenter model has two pools."""
    done, took = timed_probe(rig, VMWARE_RESOURCE_POOL="")
    assert done.returncode == 1 and done.stdout == "" and took < PROBE_BUDGET
    assert "has 2 resource pools (DC0_C0/Resources, DC0_H0/Resources): name one" in rig.log.read_text()
