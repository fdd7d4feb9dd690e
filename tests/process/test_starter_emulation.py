"""The starter emulation itself (tests/starter_emulation.py), on libvirt's test hypervisor.

read_argv's rules on canned bytes, and the whole conversation, with the
starter's pauses shortened, against the daemon on ``test:///default``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gahp_process import VMGAHP, gahp_env, job_ad
from starter_emulation import ARGV_BUFFER, StarterCrashed, StarterEmulation
from vmgahp.protocol.client import GahpClient

VM_NAME = "alice_example.org_42.0"


def emulation(work: Path, **overrides) -> StarterEmulation:
    ad = [line for line in job_ad(work) if not line.startswith("VM_WORKING_DIR")]
    options = dict(getpid_delay=0.0, status_interval=0.5, pause=0.02, blocking_poll=0.05, read_timeout=30)
    options.update(overrides)
    return StarterEmulation([str(VMGAHP)], env=gahp_env(work), working_dir=work, job_ad=ad, vm_type="kvm",
                            vm_name=VM_NAME, **options)


def fed(data: bytes, banner: bool = False) -> StarterEmulation:
    """An emulation whose gahp has already written ``data`` (and, unless ``banner``, its banner)."""
    emu = emulation(Path("/nonexistent"))
    emu.client = GahpClient(banner=banner)
    emu.client.receive_data(data)
    return emu


def test_read_argv_escapes_and_words() -> None:
    emu = fed(b"S a\\ b\\\\c\r\n1 0  x\\\nq\n")
    assert emu.read_argv() == ["S", "a b\\c"]
    assert emu.read_argv() == ["1", "0", "", "x\nq"]  # an empty word, an escaped LF kept


def test_read_argv_drops_one_word_r_lines_and_polls_soon() -> None:
    emu = fed(b"R\nRfoo\nR x\n")
    assert emu.read_argv() == ["R", "x"]  # two words: not a notification
    assert emu._poll_soon
    assert [words for words in emu.wire.read()] == [["R"], ["Rfoo"], ["R", "x"]]


def test_read_argv_asserts_on_a_10_kib_word() -> None:
    assert fed(b"S " + b"x" * (ARGV_BUFFER - 1) + b"\n").read_argv()[1] == "x" * (ARGV_BUFFER - 1)
    with pytest.raises(StarterCrashed):
        fed(b"S " + b"x" * ARGV_BUFFER + b"\n").read_argv()
    # The limit is per word: escaped spaces do not end one.
    with pytest.raises(StarterCrashed):
        fed(b"S " + b"x\\ " * (ARGV_BUFFER // 2) + b"\n").read_argv()


def test_banner_skips_to_the_dollar_and_drops_backslashes() -> None:
    emu = fed(b"noise $VMGahpVersion 0.0.1 May 1 2007 Condor\\ VMGAHP $\n", banner=True)
    assert emu.read_banner() == "$VMGahpVersion 0.0.1 May 1 2007 Condor VMGAHP $"


def test_conversation_on_the_test_hypervisor(work: Path) -> None:
    emu = emulation(work)
    try:
        start = emu.start_job()
        assert start.result == ["2", "0", "1"]
        emu.run_until(lambda: len(emu.statuses) >= 2, timeout=20)
        assert {s.state for s in emu.statuses} == {"Running"}
        assert emu.suspend().ok
        seen = len(emu.statuses)
        emu.run_until(lambda: len(emu.statuses) >= seen + 2, timeout=20)
        assert [s.state for s in emu.statuses[seen:]] == ["Suspended"] * (len(emu.statuses) - seen)
        assert not emu.job_ended
        assert emu.resume().ok
        assert emu.stop().ok
        assert emu.job_ended and emu.exit_status == 0
        assert emu.kill_mode is not None and emu.kill_mode.returncode == 0
    finally:
        emu.kill()
    lines = [line for line, _ in emu.wire.writes()]
    assert lines[:4] == ["COMMANDS", "SUPPORT_VMS", "ASYNC_MODE_ON", "CLASSAD"]
    assert lines[4] == f'VM_WORKING_DIR = "{work}"'
    assert "CONDOR_VM_START 2 kvm" in lines and lines[-1] == "QUIT"
    assert all(data.endswith(b"\r\n") for data in emu.wire.written())
    assert "VERSION" not in lines
