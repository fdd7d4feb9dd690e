"""Protocol transcripts replayed against the real daemon, and self-tests of the runner.

* ``test_transcript``: one test per file in ``tests/transcripts/shared`` and
  ``tests/transcripts/vmgahp`` (ids are the file names), run with
  ``transcript_runner`` against ``python -m vmgahp`` (or ``$VMGAHP_CMD``).
* The ``test_runner_*`` tests run the runner against ``tests/fake_gahp.py``:
  it must pass tolerated asynchronous behaviour and must FAIL on a wrong reply,
  a missing R, an extra line, a stray or duplicate R and the other faults - a
  runner that cannot fail proves nothing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

import transcript_runner as tr

HERE = Path(__file__).resolve().parent
SHARED_DIR = HERE / "transcripts" / "shared"
OWN_DIR = HERE / "transcripts" / "vmgahp"
SHARED_SOURCE = HERE.parent.parent / "shared" / "protocol" / "transcripts"  # shared/ beside the checkout
FAKE_GAHP = [sys.executable, str(HERE / "fake_gahp.py")]
TRANSCRIPTS = sorted(SHARED_DIR.glob("*.txt")) + sorted(OWN_DIR.glob("*.txt"))

# Where vmgahp deliberately fixes the C++ behaviour a shared transcript
# records. Each must still fail (strict), and an own transcript shows the fix.
# (None today: the shared 12_probe_test_mode.txt now accepts the Q9 fix.)
DEVIATIONS: dict[str, str] = {}

# The transcripts (the shared ones verbatim) record the C++ answer "S xen kvm";
# vmgahp lists vmware too where pyVmomi is installed (drivers/vmware).
SUPPORT_VMS = ({"S xen kvm": "S xen kvm vmware"} if importlib.util.find_spec("pyVmomi") is not None else {})
if SUPPORT_VMS:
    # A START of a listed type this gahp does not run is accepted (S) and
    # answered NO_SUPPORTED_VM_TYPE, as the C++ does for xen in a kvm gahp (24).
    DEVIATIONS["07_bad_commands.txt"] = "vmware is a supported type where pyVmomi is installed"


# --------------------------------------------------------------- the transcripts
def _param(path: Path):
    if path.parent == SHARED_DIR and path.name in DEVIATIONS:
        return pytest.param(path, id=path.name, marks=pytest.mark.xfail(strict=True, reason=DEVIATIONS[path.name]))
    return pytest.param(path, id=path.name)


@pytest.mark.parametrize("path", [_param(p) for p in TRANSCRIPTS])
def test_transcript(path: Path) -> None:
    transcript = tr.parse_transcript(path)
    if transcript.skip_reason:
        pytest.skip(transcript.skip_reason)
    if transcript.requires_root and os.geteuid() != 0:
        pytest.skip("needs root")
    result = tr.run_transcript(transcript, tr.Options(cmd=tr.default_cmd(), substitutions=dict(SUPPORT_VMS)))
    assert result.passed, result.report()


OWN = sorted(OWN_DIR.glob("*.txt"))


@pytest.mark.parametrize("path", OWN, ids=[p.name for p in OWN])
def test_own_transcript_is_documented(path: Path) -> None:
    transcript = tr.parse_transcript(path)
    assert transcript.kind in ("conformance", "starter-session"), "needs '# kind: conformance|starter-session'"
    assert transcript.sources >= 1, "needs '# source:' comments citing the spec"
    assert any(isinstance(s, tr.Exit) for s in transcript.steps), "needs '# @exit N'"


def test_enough_own_transcripts() -> None:
    assert len(OWN) >= 22
    assert len({p.name for p in TRANSCRIPTS}) == len(TRANSCRIPTS), "file names must be unique (test ids)"


@pytest.mark.skipif(not SHARED_SOURCE.is_dir(), reason="shared protocol folder not present")
def test_shared_copies_are_verbatim() -> None:
    sources = sorted(SHARED_SOURCE.glob("*.txt"))
    assert [p.name for p in sources] == [p.name for p in sorted(SHARED_DIR.glob("*.txt"))]
    for source in sources:
        assert (SHARED_DIR / source.name).read_bytes() == source.read_bytes(), source.name


# ------------------------------------------------------ runner: parsing and set-up
def test_gahp_split_quirks() -> None:
    assert tr.gahp_split("CONDOR_VM_STATUS  5 1") == ["CONDOR_VM_STATUS", "", "5", "1"]
    assert tr.gahp_split("RESULTS\\ ") == ["RESULTS"]  # escaped last character dropped
    assert tr.gahp_split("a\\ b c") == ["a b", "c"]
    assert tr.gahp_split("x\t5 ") == ["x", "5", ""]
    assert tr.gahp_split("") == [""]


def _write(tmp_path: Path, body: str, name: str = "t.txt") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def test_parser_groups_results_and_windows(tmp_path: Path) -> None:
    t = tr.parse_transcript(_write(tmp_path, BASE))
    groups = [s for s in t.steps if isinstance(s, tr.ResultsGroup)]
    assert [len(g.lines) for g in groups] == [2, 0]
    assert groups[0].lines[1].regex
    (r,) = t.r_expectations
    assert isinstance(t.steps[r.command_step], tr.Send)
    assert t.steps[r.command_step].request_id == 2
    assert t.steps[r.window_start].text == "ASYNC_MODE_ON"
    assert t.steps[r.window_end] is groups[0]


def test_parser_classad_block_is_not_commands(tmp_path: Path) -> None:
    body = "> CLASSAD\n< S\n> RESULTS\n> QUIT\n> CLASSAD_END\n< S\n> RESULTS\n< S 0\n"
    t = tr.parse_transcript(_write(tmp_path, body))
    sends = [s for s in t.steps if isinstance(s, tr.Send)]
    assert [s.command for s in sends] == ["CLASSAD", None, None, "CLASSAD_END"]
    assert isinstance(t.steps[-1], tr.ResultsGroup)


def test_parser_rejects_garbage(tmp_path: Path) -> None:
    with pytest.raises(tr.TranscriptError):
        tr.parse_transcript(_write(tmp_path, "hello\n"))
    with pytest.raises(tr.TranscriptError):
        tr.parse_transcript(_write(tmp_path, "# @frobnicate\n"))
    result = tr.run_file(_write(tmp_path, "> RESULTS\n< S 2\n< 1 0 x\n"))
    assert result.status == "FAIL" and "transcript error" in result.message


def test_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_CONDOR_VM_MEMORY", "99")
    monkeypatch.setenv("VMGAHP_VMTYPE", "xen")
    body = (
        "# @env VMGAHP_WORKING_DIR=/var/lib/condor/execute/dir_4242\n"
        "# @config VM_MEMORY = 1024\n"
        "# @config XEN_BOOTLOADER = /opt/boot/pygrub\n"
        "# @file /var/lib/condor/execute/dir_4242/disk.qcow2 qcow2 image\n"
        "# @file /opt/boot/pygrub bootloader\n"
        "# @file /var/lib/condor/execute/dir_4242/sub/\n"
        "# @chmod /opt/boot/pygrub 0600\n"
    )
    t = tr.parse_transcript(_write(tmp_path, body))
    ws = tr.make_workspace(t)
    try:
        disk = ws.scratch / "disk.qcow2"
        assert disk.stat().st_size == 1 << 20 and disk.stat().st_blocks * 512 < 1 << 20  # sparse
        boot = Path(ws.sub("/opt/boot/pygrub"))
        assert boot.is_file() and str(boot).startswith(str(ws.aux))
        assert oct(boot.stat().st_mode & 0o777) == "0o600"
        assert (ws.scratch / "sub").is_dir()
        assert oct(ws.scratch.stat().st_mode & 0o777) == "0o755"
        env = ws.env
        assert env["VMGAHP_WORKING_DIR"] == str(ws.scratch)
        assert "VMGAHP_VMTYPE" not in env  # inherited VMGAHP_* dropped
        assert env["_CONDOR_VM_MEMORY"] == "1024"
        assert env["_CONDOR_XEN_BOOTLOADER"] == str(boot)
        assert env["_CONDOR_VM_KVM_LIBVIRT_URI"] == "test:///default"
        config = Path(env["CONDOR_CONFIG"]).read_text()
        assert "VM_XEN_LIBVIRT_URI = test:///default" in config and f"XEN_BOOTLOADER = {boot}" in config
        assert ws.sub_regex(r"x /opt/boot/pygrub y") == "x " + tr.re.escape(str(boot)) + " y"
    finally:
        ws.remove()
    assert not ws.root.exists()


# ------------------------------------------------ runner against the fake gahp
BASE = r"""# kind: conformance
# @env FAKE_GAHP_FAULTS={faults}
< $VMGahpVersion 0.0.1 May 1 2007 Condor\ VMGAHP $
> COMMANDS
< S ASYNC_MODE_ON ASYNC_MODE_OFF CONDOR_VM_START CONDOR_VM_STOP CONDOR_VM_SUSPEND CONDOR_VM_SOFT_SUSPEND CONDOR_VM_RESUME CONDOR_VM_CHECKPOINT CONDOR_VM_STATUS CONDOR_VM_GETPID QUIT VERSION COMMANDS SUPPORT_VMS RESULTS CLASSAD CLASSAD_END
> SUPPORT_VMS
< S xen kvm
> ASYNC_MODE_ON
< S
> CONDOR_VM_STATUS 2 7
< S
< R
> CONDOR_VM_STOP 3 7
< S
> RESULTS
< S 2
< 2 0 STATUS=Stopped
<~ 3 1 VMGAHP_ERR_\w+
> RESULTS
< S 0
> QUIT
< S
# @eof
# @exit 0
"""  # noqa: E501 - the COMMANDS reply is one wire line


def _run_fake(tmp_path: Path, faults: str = "", body: str = BASE) -> tr.RunResult:
    text = body.replace("{faults}", faults)
    opts = tr.Options(cmd=FAKE_GAHP, timeout=2.0, repoll_s=1.0)
    return tr.run_file(_write(tmp_path, text), opts)


@pytest.mark.parametrize("faults", ["", "late-results", "r-before-s", "reverse-results"])
def test_runner_passes_tolerated_behaviour(tmp_path: Path, faults: str) -> None:
    result = _run_fake(tmp_path, faults)
    assert result.passed, result.report()


@pytest.mark.parametrize(
    "faults, needle",
    [
        ("no-r", "missing R"),
        ("double-r", "duplicate R"),
        ("extra-line", "'X extra'"),  # seen before the next send, or instead of the next reply
        ("stray-r", "stray R"),
        ("crlf", "CRLF"),
        ("wrong-status", "unexpected result line '2 0 STATUS=Running'"),
        ("exit-3", "exited 3, expected 0"),
        ("no-eof", "expected EOF"),
    ],
)
def test_runner_fails_on_daemon_faults(tmp_path: Path, faults: str, needle: str) -> None:
    result = _run_fake(tmp_path, faults)
    assert result.status == "FAIL", result.report()
    assert needle in result.message, result.message


def _mutate(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new, 1)


@pytest.mark.parametrize(
    "body, needle",
    [
        (_mutate("< S xen kvm", "< S kvm xen"), "expected '< S kvm xen', got 'S xen kvm'"),
        (_mutate("< S 2\n< 2 0 STATUS=Stopped\n", "< S 2\n< 2 0 STATUS=Running\n"), "unexpected result line"),
        (_mutate("<~ 3 1 VMGAHP_ERR_\\w+", "<~ 3 1 VMGAHP_ERR_INTERNAL"), "unexpected result line"),
        (_mutate("> RESULTS\n< S 0\n", "> RESULTS\n< S 1\n< 9 0 NULL\n"), "results still missing"),
        (_mutate("> RESULTS\n< S 2\n< 2 0 STATUS=Stopped\n<~ 3 1 VMGAHP_ERR_\\w+\n",
                 "> RESULTS\n< S 1\n< 2 0 STATUS=Stopped\n"),
         "unexpected result line"),
        (_mutate("< S\n< R\n", "< S\n"), "stray R"),
        (_mutate("> COMMANDS\n< S ASYNC", "> COMMANDS\n< S ASYNC_MODE_ON\n< S ASYNC"), "expected '< S ASYNC_MODE_ON'"),
        (_mutate("< S\n# @eof", "< S\n< bye\n# @eof"), "expected '< bye', got EOF"),
        (_mutate("# @exit 0", "# @exit 1"), "exited 0, expected 1"),
        (_mutate("> QUIT\n< S\n# @eof\n# @exit 0\n", ""), None),  # ends while the daemon lives: PASS
    ],
    ids=["wrong-reply", "wrong-result", "wrong-regex", "missing-result", "extra-result", "missing-r-in-transcript",
         "missing-line", "expected-more", "wrong-exit", "no-quit"],
)
def test_runner_fails_on_wrong_expectations(tmp_path: Path, body: str, needle: str | None) -> None:
    result = _run_fake(tmp_path, body=body)
    if needle is None:
        assert result.passed, result.report()
        return
    assert result.status == "FAIL", result.report()
    assert needle in result.message, result.message


def test_runner_fails_on_a_result_collected_by_the_wrong_group(tmp_path: Path) -> None:
    # late-results: STATUS 2 completes 0.3 s after its S. A group that expects
    # S 0 is not re-polled, so the late result shows up in the next group,
    # which does not expect it.
    body = _mutate("< S\n< R\n> CONDOR_VM_STOP 3 7\n< S\n> RESULTS\n< S 2\n< 2 0 STATUS=Stopped\n"
                   "<~ 3 1 VMGAHP_ERR_\\w+\n",
                   "< S\n< R\n> RESULTS\n< S 0\n# @sleep 0.5\n> RESULTS\n< S 0\n")
    result = _run_fake(tmp_path, "late-results", body=body)
    assert result.status == "FAIL", result.report()


def test_runner_against_real_daemon_catches_a_wrong_vm_id(tmp_path: Path) -> None:
    source = SHARED_DIR / "02_kvm_start_status_stop.txt"
    text = source.read_text().replace("< 2 0 1\n", "< 2 0 2\n", 1)
    cmd = tr.default_cmd()
    if not os.path.exists(cmd[0]):
        pytest.skip("daemon not installed")
    result = tr.run_file(_write(tmp_path, text, source.name),
                         tr.Options(cmd=cmd, repoll_s=1.0, substitutions=dict(SUPPORT_VMS)))
    assert result.status == "FAIL" and "unexpected result line '2 0 1'" in result.message, result.report()


# ------------------------------------------- runner options for real hypervisors
def _with_wait(wait: str = "# @wait 60\n") -> str:
    return _mutate("> CONDOR_VM_STATUS 2 7\n", wait + "> CONDOR_VM_STATUS 2 7\n")


def test_runner_wait_polls_until_the_expected_status(tmp_path: Path) -> None:
    calls: list[str] = []

    def until(status: str) -> bool:
        calls.append(status)
        return len(calls) >= 3

    opts = tr.Options(cmd=FAKE_GAHP, timeout=2.0, repoll_s=1.0, until_status=until)
    result = tr.run_file(_write(tmp_path, _with_wait().replace("{faults}", "")), opts)
    assert result.passed, result.report()
    assert calls == ["Stopped"] * 3


def test_runner_wait_fails_when_the_status_never_comes(tmp_path: Path) -> None:
    opts = tr.Options(cmd=FAKE_GAHP, timeout=2.0, repoll_s=1.0, until_status=lambda s: False, until_timeout=0.3)
    result = tr.run_file(_write(tmp_path, _with_wait().replace("{faults}", "")), opts)
    assert result.status == "FAIL" and "did not reach STATUS=Stopped" in result.message, result.report()


def test_runner_wait_scale_sleeps_and_ignores_non_status_waits(tmp_path: Path) -> None:
    calls: list[str] = []
    # The @wait before STOP is not followed by a STATUS: scaled sleep, no poll.
    body = _mutate("> CONDOR_VM_STOP 3 7\n", "# @wait 3\n> CONDOR_VM_STOP 3 7\n").replace("{faults}", "")
    opts = tr.Options(cmd=FAKE_GAHP, timeout=2.0, repoll_s=1.0, wait_scale=0.1,
                      until_status=lambda s: calls.append(s) or True)
    began = tr.time.monotonic()
    result = tr.run_file(_write(tmp_path, body), opts)
    assert result.passed, result.report()
    assert tr.time.monotonic() - began >= 0.3
    assert calls == []


def test_runner_env_file_sources_skipped_files_and_after_run(tmp_path: Path) -> None:
    source = tmp_path / "real.img"
    source.write_bytes(b"real image")
    body = ("# @skip-harness needs a real guest\n"
            "# @file /var/lib/condor/execute/dir_4242/vm.img disk image\n" + BASE.replace("{faults}", ""))
    seen: dict[str, object] = {}

    def after(ws: tr.Workspace) -> None:
        seen["disk"] = (ws.scratch / "vm.img").read_bytes()
        seen["env"] = ws.env["_CONDOR_VM_KVM_LIBVIRT_URI"]
        seen["config"] = Path(ws.env["CONDOR_CONFIG"]).read_text()

    path = _write(tmp_path, body)
    assert tr.run_file(path, tr.Options(cmd=FAKE_GAHP)).status == "SKIP"
    opts = tr.Options(cmd=FAKE_GAHP, timeout=2.0, repoll_s=1.0, run_skipped=True, after_run=after,
                      env={"_CONDOR_VM_KVM_LIBVIRT_URI": "qemu:///system"},
                      file_sources={"/var/lib/condor/execute/dir_4242/vm.img": source})
    result = tr.run_file(path, opts)
    assert result.passed, result.report()
    assert seen["disk"] == b"real image"
    assert seen["env"] == "qemu:///system"
    assert seen["config"].rstrip().endswith("VM_KVM_LIBVIRT_URI = qemu:///system")

    def failing(ws: tr.Workspace) -> None:
        raise AssertionError("no result.txt")

    opts.after_run = failing
    result = tr.run_file(path, opts)
    assert result.status == "FAIL" and result.message == "after_run: no result.txt", result.report()


def test_runner_substitutions_apply_to_sent_and_expected_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("{faults}", ""))
    opts = tr.Options(cmd=FAKE_GAHP, timeout=2.0, repoll_s=1.0)
    renumbered = tr.Options(**{**opts.__dict__, "substitutions": {"CONDOR_VM_STOP 3 7": "CONDOR_VM_STOP 3 8"}})
    assert tr.run_file(path, renumbered).passed
    # The expectation 'S xen kvm' becomes 'S kvm xen', which the fake gahp does not say.
    result = tr.run_file(path, tr.Options(**{**opts.__dict__, "substitutions": {"xen kvm": "kvm xen"}}))
    assert result.status == "FAIL" and "got 'S xen kvm'" in result.message, result.report()
