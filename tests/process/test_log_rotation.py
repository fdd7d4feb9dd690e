"""VM_GAHP_LOG rotation as HTCondor's dprintf does it, safe with many writers.

* by size (``MAX_VM_GAHP_LOG``), keeping ``MAX_NUM_VM_GAHP_LOG`` old files
  named as HTCondor names them (``.old``, then ``.YYYYmmddTHHMMSS``);
* several processes appending to one log that rotates every few KB: every
  line in exactly one file, none torn, each writer's lines in order across
  the files (so none went into a file already rotated away);
* a real gahp process rotating its own log, in the text format, with the
  job id on every line once the job ad has come.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gahp_process import GahpProcess, job_ad
from vmgahp import log_file
from vmgahp.log_file import LogFile
from vmgahp.log_knobs import LogOptions

STAMP = re.compile(r"\d{8}T\d{6}")
TEXT_LINE = re.compile(r"\d\d/\d\d/\d\d \d\d:\d\d:\d\d \(pid:(\d+)\) \[job (\S+) req (\S+) vm (\S+)\] (\S+)(.*)")


def _announce(previous: str, size: int) -> bytes:
    return f"rotated {previous} {size}\n".encode()


def _files_by_age(path: Path) -> list[Path]:
    """The log's files, oldest first: .old, the time stamps in order, the log."""
    suffixes = [p.name[len(path.name) + 1:] for p in path.parent.glob(path.name + ".*")]
    rotated = sorted(s for s in suffixes if STAMP.fullmatch(s))
    return ([path.with_name(path.name + ".old")] if "old" in suffixes else []) + \
        [path.with_name(f"{path.name}.{s}") for s in rotated] + [path]


def _write_lines(log: LogFile, count: int, width: int = 100) -> None:
    for seq in range(count):
        log.write(f"{seq:06d} ".encode() + b"x" * (width - 8) + b"\n")


def _seqs(files: list[Path]) -> list[int]:
    return [int(line.split()[0]) for f in files for line in f.read_text().splitlines()
            if not line.startswith("rotated ")]


# ----------------------------------------------------------- one writer
def test_rotates_at_the_size_into_dot_old(tmp_path: Path):
    """MAX_NUM 1 (the default): one old file, VMGahpLog.old, each rotation replacing it."""
    path = tmp_path / "VMGahpLog"
    log = LogFile(str(path), LogOptions(max_size=4096, max_num=1), _announce)
    _write_lines(log, 200)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VMGahpLog", "VMGahpLog.old"]
    old = path.with_name("VMGahpLog.old")
    assert 4096 <= old.stat().st_size < 4096 + 100 + 40  # rotated once full (checked before a line)
    assert path.read_text().startswith("rotated VMGahpLog.old ")
    seqs = _seqs([old, path])
    assert seqs == list(range(seqs[0], 200))  # the newest lines, none twice


def test_keeps_max_num_old_files_named_by_time(tmp_path: Path):
    """MAX_NUM > 1: VMGahpLog.<YYYYmmddTHHMMSS>, and the oldest kept one becomes .old
    (log_rotate.cpp cleanUpOldLogFiles); the names stay distinct within a second."""
    path = tmp_path / "VMGahpLog"
    log = LogFile(str(path), LogOptions(max_size=4096, max_num=4), _announce)
    _write_lines(log, 600)  # ~14 rotations
    files = _files_by_age(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files)
    assert files[0].name == "VMGahpLog.old" and len(files) == 1 + 4
    assert all(STAMP.fullmatch(f.name.split(".", 1)[1]) for f in files[1:-1])
    seqs = _seqs(files)
    assert seqs == list(range(seqs[0], 600))


def test_zero_never_rotates(tmp_path: Path):
    path = tmp_path / "VMGahpLog"
    _write_lines(LogFile(str(path), LogOptions(max_size=0)), 300)
    assert [p.name for p in tmp_path.iterdir()] == ["VMGahpLog"]
    assert path.stat().st_size == 300 * 100


def test_old_files_beyond_the_number_are_folded_into_dot_old(tmp_path: Path):
    """As HTCondor cleans up after MAX_NUM was lowered; other files are left alone."""
    path = tmp_path / "VMGahpLog"
    for name in ("VMGahpLog.20200101T000000", "VMGahpLog.20200102T000000", "VMGahpLog.bak", "VMGahpLog.1"):
        (tmp_path / name).write_text(name)
    _write_lines(LogFile(str(path), LogOptions(max_size=1000, max_num=1)), 11)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VMGahpLog", "VMGahpLog.1", "VMGahpLog.bak",
                                                          "VMGahpLog.old"]


def test_dev_null_and_a_pipe_are_written_and_never_rotated(tmp_path: Path):
    _write_lines(LogFile("/dev/null", LogOptions(max_size=10)), 20)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        _write_lines(LogFile(str(fifo), LogOptions(max_size=10)), 5, width=20)
        assert os.read(reader, 1000).count(b"\n") == 5
    finally:
        os.close(reader)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]


def test_follows_a_log_moved_by_someone_else(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(log_file, "CHECK_INTERVAL", 0.0)
    path = tmp_path / "VMGahpLog"
    log = LogFile(str(path), LogOptions(max_size=0))
    log.write(b"before\n")
    path.rename(tmp_path / "moved")
    log.write(b"after\n")
    assert (tmp_path / "moved").read_text() == "before\n" and path.read_text() == "after\n"


def test_the_path_is_not_looked_at_on_every_line(tmp_path: Path, monkeypatch):
    calls = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda *a, **k: calls.append(a) or real_stat(*a, **k))
    log = LogFile(str(tmp_path / "VMGahpLog"), LogOptions(max_size=10**9))
    _write_lines(log, 2000)
    assert len(calls) <= 2  # at most once a second


def test_a_rotation_that_fails_is_reported_and_retried_later(tmp_path: Path, monkeypatch):
    def refuse(*_args):
        attempts.append(1)
        raise PermissionError(13, "Permission denied")

    attempts: list[int] = []
    monkeypatch.setattr(os, "rename", refuse)
    path = tmp_path / "VMGahpLog"
    log = LogFile(str(path), LogOptions(max_size=1000, max_num=1))
    _write_lines(log, 50)
    assert attempts == [1]  # not once a line
    assert _seqs([path]) == list(range(50))
    notes = log.take_notes()
    assert len(notes) == 1 and "cannot rotate" in notes[0] and log.take_notes() == []


def test_without_flock_it_still_logs_and_rotates(tmp_path: Path, monkeypatch):
    """A file system without locks (NFS without lockd): said once, then HTCondor's way."""
    def no_locks(*_args):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(log_file.fcntl, "flock", no_locks)
    path = tmp_path / "VMGahpLog"
    log = LogFile(str(path), LogOptions(max_size=4096, max_num=1))
    _write_lines(log, 100)
    seqs = _seqs([path.with_name("VMGahpLog.old"), path])
    assert seqs == list(range(seqs[0], 100)) and seqs[0] > 0
    notes = log.take_notes()
    assert len(notes) == 1 and "cannot lock" in notes[0]


def test_trouble_with_the_file_is_logged_in_it(tmp_path: Path, monkeypatch):
    from vmgahp import log

    def refuse(*_args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "rename", refuse)
    path = tmp_path / "VMGahpLog"
    try:
        log.setup(path=str(path), options=LogOptions(max_size=500))
        for seq in range(20):
            log.get().info("line", seq=seq)
    finally:
        log.setup()
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["seq"] for e in events if e["event"] == "line"] == list(range(20))
    trouble = [e for e in events if e["event"] == "log_trouble"]
    assert len(trouble) == 1 and trouble[0]["level"] == "warning" and "cannot rotate" in trouble[0]["detail"]


# ------------------------------------------------------ several writers
WRITERS = r'''
import os, sys
from vmgahp import log
from vmgahp.log_knobs import LogOptions

path, fmt, max_size, max_num, writers, lines = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
log.setup(path=path, options=LogOptions(max_size=max_size, max_num=max_num, format=fmt))
log.get().info("parent")  # opened before the forks: each child must not share its descriptor
children = []
start_r, start_w = os.pipe()
for writer in range(writers):
    pid = os.fork()
    if pid == 0:
        os.close(start_w)
        os.read(start_r, 1)  # all start together: EOF once every writer is forked
        for seq in range(lines):
            log.get().info("line", writer=writer, seq=seq, pad="x" * (seq % 64))
        os._exit(0)
    children.append(pid)
os.close(start_w)
sys.exit(sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0 for pid in children))
'''


def _run_writers(path: Path, fmt: str, max_size: int, max_num: int, writers: int, lines: int) -> None:
    done = subprocess.run([sys.executable, "-c", WRITERS, str(path), fmt, str(max_size), str(max_num),
                           str(writers), str(lines)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def _events(path: Path, fmt: str) -> list[dict]:
    """Every line of the file as an event; a torn or merged line fails here."""
    events = []
    for line in path.read_text().splitlines():
        if fmt == "json":
            events.append(json.loads(line))
            continue
        match = TEXT_LINE.fullmatch(line)
        assert match, f"not a whole text line: {line!r}"
        event = {"pid": int(match[1]), "event": match[5]}
        event.update(field.split("=", 1) for field in match[6].split())
        events.append(event)
    return events


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_several_writers_lose_no_line(tmp_path: Path, fmt: str):
    """4 processes x 2000 lines into one log rotating every 4 KB (~250 rotations),
    every old file kept: each line is in exactly one file, whole; each writer's
    lines are in order from the oldest file to the newest."""
    path = tmp_path / "VMGahpLog"
    writers, lines = 4, 2000
    _run_writers(path, fmt, 4096, 100000, writers, lines)
    files = _files_by_age(path)
    assert len(files) > 100
    seen: dict[int, list[int]] = {w: [] for w in range(writers)}
    announced: dict[str, int] = {}  # old file -> index of the file that says it was rotated
    for index, f in enumerate(files):
        for event in _events(f, fmt):
            if event["event"] == "line":
                seen[int(event["writer"])].append(int(event["seq"]))
            elif event["event"] == "log_rotated":
                assert event["previous"] not in announced
                announced[event["previous"]] = index
        if f != path:
            size = f.stat().st_size
            assert 4096 <= size < 4096 + writers * 300, (f.name, size)
    for writer in range(writers):
        assert seen[writer] == list(range(lines)), f"writer {writer}"
    # Each rotation is announced once, in a later file (the next one, unless the
    # rotating writer was pre-empted between its rename and opening the new file).
    assert set(announced) == {f.name for f in files[:-1]}
    assert all(announced[f.name] > index for index, f in enumerate(files[:-1]))


def test_several_writers_keep_max_num_files(tmp_path: Path):
    """The same with MAX_NUM 3: four files in all, and what is left of each
    writer is its newest lines, whole, in order, none twice."""
    path = tmp_path / "VMGahpLog"
    writers, lines = 4, 1500
    _run_writers(path, "json", 4096, 3, writers, lines)
    files = _files_by_age(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for f in files)
    assert len(files) == 4 and files[0].name == "VMGahpLog.old"
    seen: dict[int, list[int]] = {w: [] for w in range(writers)}
    for f in files:
        for event in _events(f, "json"):
            if event["event"] == "line":
                seen[event["writer"]].append(event["seq"])
    assert any(seen.values())
    for writer in range(writers):  # one that finished early may have had all its lines rotated out
        assert seen[writer] == list(range(seen[writer][0], lines) if seen[writer] else []), f"writer {writer}"


# ------------------------------------------------------------ the daemon
def test_the_gahp_rotates_its_log_in_text_with_the_job_id(work: Path):
    gahp = GahpProcess(work, MAX_VM_GAHP_LOG="2 Kb", MAX_NUM_VM_GAHP_LOG="2", VM_GAHP_LOG_FORMAT="text")
    try:
        gahp.handshake()
        gahp.send_ad(job_ad(work))
        assert gahp.call("CONDOR_VM_START", "kvm") == (True, "1")
        for _ in range(40):
            assert gahp.call("CONDOR_VM_STATUS", "1")[0]
        assert gahp.reply("QUIT") == "S"
        assert gahp.wait() == 0
    finally:
        gahp.kill()
    path = work / "vmgahp.log"
    files = _files_by_age(path)
    assert len(files) == 3 and files[0].name == "vmgahp.log.old"  # MAX_NUM 2: .old and one time stamp
    lines = [line for f in files for line in f.read_text().splitlines()]
    parsed = [TEXT_LINE.fullmatch(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed, strict=True) if not m]
    assert {m[1] for m in parsed} == {str(gahp.proc.pid)}
    # Older lines were rotated out (3 files of ~2 KB); what is left is the STATUS
    # requests, each line with the job's id, its request's id and the VM's.
    status = [m for m in parsed if m[5] == "request_done" and "command=CONDOR_VM_STATUS" in m[6]]
    assert len(status) >= 8 and all(m[2] == "42.0" and m[3].isdigit() and m[4] == "1" for m in status)
    assert all(m[2] == "42.0" for m in parsed[parsed.index(status[0]):])  # and every other line
    assert any(m[5] == "log_rotated" for m in parsed)
