"""The log's knobs, HTCondor's size syntax, the text layout and the ids on every line.

Rotation and several writers are in test_log_rotation.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import settings
from vmgahp import log
from vmgahp.log_knobs import DEFAULT_MAX_SIZE, LogOptions, options_from, parse_log_size
from vmgahp.log_text import TextRenderer, value_text

KB, MB, GB = 1024, 1024 * 1024, 1024 * 1024 * 1024
TEXT_LINE = re.compile(r"\d\d/\d\d/\d\d \d\d:\d\d:\d\d \(pid:(\d+)\) \[job (\S+) req (\S+) vm (\S+)\] (.*)")


@pytest.fixture
def restore_log():
    yield
    log.bind_job(None)
    log.setup()


# ----------------------------------------------------------- HTCondor's sizes
@pytest.mark.parametrize("text,expected", [
    ("10 Mb", (10 * MB, False)), ("10Mb", (10 * MB, False)), ("10 MB", (10 * MB, False)),
    ("10 mb", (10 * MB, False)), ("10 MiB", (10 * MB, False)), ("10 M", (10 * MB, False)),
    ("1000000", (1000000, False)), (" 4 Kb ", (4 * KB, False)), ("4k", (4 * KB, False)),
    ("4 Kbytes", (4 * KB, False)), ("2 G", (2 * GB, False)), ("1 T", (1024 * GB, False)),
    ("7 B", (7, False)), ("0", (0, False)), ("5 x", (5, False)),  # an unknown unit is bytes
    ("10 m", (600, True)), ("10 min", (600, True)), ("10 Mi", (600, True)), ("30 s", (30, True)),
    ("2 h", (7200, True)), ("1 d", (86400, True)), ("1 w", (604800, True)), ("-5", (-5, False)),
])
def test_log_size_syntax(text, expected):
    """dprintf_parse_log_size (dprintf_config.cpp): the number, then only the unit's
    first letters count; a bare lower-case m is minutes, M megabytes."""
    assert parse_log_size(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "Mb", "10 Mb x", "10 Mx", "ten", "1.5 Mb"])
def test_log_size_syntax_rejects(text):
    assert parse_log_size(text) is None


def test_defaults_without_any_knob():
    options, warnings = options_from({}.get)
    assert options == LogOptions() and warnings == []
    assert (options.max_size, options.max_num, options.format) == (10 * MB, 1, "json")


def test_htcondor_default_is_10_mb(tmp_path: Path):
    """With an empty configuration HTCondor's param() gives MAX_VM_GAHP_LOG =
    $(MAX_DEFAULT_LOG) = '10 Mb' (param_info.in), and no MAX_NUM_VM_GAHP_LOG."""
    script = ("from vmgahp.gahp.condor_param import read_knobs\n"
              "from vmgahp.log_knobs import options_from\n"
              "knobs = read_knobs()\n"
              "print(repr((knobs.get('MAX_VM_GAHP_LOG'), knobs.get('MAX_NUM_VM_GAHP_LOG'),"
              " options_from(knobs.get)[0].max_size)))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_CONDOR_", "CONDOR_CONFIG"))}
    env["CONDOR_CONFIG"] = "/dev/null"
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    assert out == repr(("10 Mb", None, 10 * MB))


def test_knobs():
    options, warnings = options_from({"MAX_VM_GAHP_LOG": "4 Kb", "MAX_NUM_VM_GAHP_LOG": "5",
                                      "VM_GAHP_LOG_FORMAT": '"Text"', "DEBUG_TIME_FORMAT": '"%H:%M:%S"',
                                      "VM_GAHP_DEBUG": "D_FULLDEBUG D_CAT, D_SUB_SECOND"}.get)
    assert warnings == []
    assert options == LogOptions(max_size=4096, max_num=5, format="text", time_format="%H:%M:%S",
                                 categories=True, sub_second=True)


@pytest.mark.parametrize("knob,value,field,used", [
    ("MAX_VM_GAHP_LOG", "lots", "max_size", DEFAULT_MAX_SIZE),
    ("MAX_VM_GAHP_LOG", "-1", "max_size", DEFAULT_MAX_SIZE),
    ("MAX_VM_GAHP_LOG", "1 d", "max_size", DEFAULT_MAX_SIZE),  # shared by many writers: size only
    ("MAX_NUM_VM_GAHP_LOG", "-2", "max_num", 1),
    ("MAX_NUM_VM_GAHP_LOG", "some", "max_num", 1),
    ("VM_GAHP_LOG_FORMAT", "xml", "format", "json"),
])
def test_bad_values_warn_and_use_the_default(knob, value, field, used):
    options, warnings = options_from({knob: value}.get)
    assert getattr(options, field) == used
    assert len(warnings) == 1 and knob in warnings[0]


def test_truncate_on_open_is_refused():
    """TRUNC_VM_GAHP_LOG_ON_OPEN would erase the other jobs' lines at each gahp start."""
    options, warnings = options_from({"TRUNC_VM_GAHP_LOG_ON_OPEN": "true"}.get)
    assert options == LogOptions() and "TRUNC_VM_GAHP_LOG_ON_OPEN" in warnings[0]
    assert options_from({"TRUNC_VM_GAHP_LOG_ON_OPEN": "false"}.get)[1] == []


def test_settings_carry_the_log_options_and_their_warnings():
    s = settings(MAX_VM_GAHP_LOG="64 Kb", MAX_NUM_VM_GAHP_LOG="3", VM_GAHP_LOG_FORMAT="text")
    assert (s.log_options.max_size, s.log_options.max_num, s.log_options.format) == (64 * KB, 3, "text")
    assert any("MAX_VM_GAHP_LOG" in w for w in settings(MAX_VM_GAHP_LOG="huge").warnings)


# ----------------------------------------------------------------- the job id
@pytest.mark.parametrize("lines,expected", [
    (['ClusterId = 42', 'ProcId = 0', 'User = "a@b"'], "42.0"),
    (['procid=3', 'CLUSTERID = 0017'], "17.3"),
    (['ClusterId = 9'], "9.0"),
    (['ProcId = 1'], None), (['ClusterId = "42"'], None), ([], None), (None, None),
])
def test_job_id_from_the_ad(lines, expected):
    assert log.job_id_from_ad(lines) == expected


# ------------------------------------------------------------ the text layout
def test_text_line_layout():
    render = TextRenderer()
    line = render(None, "info", {"pid": 1234, "event": "request_done", "result": "NULL", "job_id": "42.0",
                                 "req_id": 7, "vm_id": 1, "level": "info"})
    match = TEXT_LINE.fullmatch(line)
    assert match, line
    assert match.groups() == ("1234", "42.0", "7", "1", "request_done result=NULL")


def test_text_line_without_ids_categories_and_sub_seconds():
    render = TextRenderer("%H:%M:%S", categories=True, sub_second=True)
    line = render(None, "error", {"pid": 5, "event": "destroy_failed", "level": "error", "job_id": None,
                                  "req_id": None, "vm_id": None, "detail": 'no "such" domain'})
    assert re.fullmatch(r'\d\d:\d\d:\d\d\.\d{3} \(pid:5\) \(D_ERROR\) \[job - req - vm -\] '
                        r'ERROR: destroy_failed detail="no \\"such\\" domain"', line), line
    debug = render(None, "debug", {"pid": 5, "event": "x", "level": "debug"})
    assert "(D_ALWAYS:2) [job - req - vm -] x" in debug


@pytest.mark.parametrize("value,text", [
    ("NULL", "NULL"), ("a b", '"a b"'), ("", '""'), ("k=v", '"k=v"'), ("line\nbreak", '"line\\nbreak"'),
    (None, "null"), (True, "true"), (3, "3"), (2.5, "2.5"), (["a", 1], '["a",1]'), ("é", "é"),
])
def test_text_values(value, text):
    assert value_text(value) == text


def test_text_traceback_follows_its_line():
    line = TextRenderer()(None, "error", {"pid": 1, "event": "crash", "level": "error",
                                          "exception": "Traceback:\n  File x\nValueError: y"})
    first, *rest = line.split("\n")
    assert first.endswith("ERROR: crash") and rest == ["\tTraceback:", "\t  File x", "\tValueError: y"]


# ---------------------------------------------------- the ids on every line
def _log_some_lines(path: Path, fmt: str) -> list[str]:
    log.setup(path=str(path), options=LogOptions(format=fmt))
    log.get().info("started")
    log.bind_job(log.job_id_from_ad(["ClusterId = 42", "ProcId = 0"]))
    with log.bound(req_id=7, command="CONDOR_VM_START"):
        with log.bound(vm_id=1):
            log.get().info("vm_started", name="alice_42.0")
    with log.bound(req_id=8, vm_id=1, command="CONDOR_VM_STATUS"):
        log.get().info("request_done", result="NULL")
    log.get().warning("eof", detail="Request buffer closed, exiting")
    return path.read_text().splitlines()


def test_json_lines_carry_the_ids(tmp_path: Path, restore_log):
    events = [json.loads(line) for line in _log_some_lines(tmp_path / "g.log", "json")]
    ids = [(e["event"], e["job_id"], e["req_id"], e["vm_id"], e["pid"]) for e in events]
    assert ids == [("started", None, None, None, os.getpid()), ("vm_started", "42.0", 7, 1, os.getpid()),
                   ("request_done", "42.0", 8, 1, os.getpid()), ("eof", "42.0", None, None, os.getpid())]


def test_text_lines_carry_the_ids(tmp_path: Path, restore_log):
    lines = _log_some_lines(tmp_path / "g.log", "text")
    found = [TEXT_LINE.fullmatch(line).groups() for line in lines]
    pid = str(os.getpid())
    assert found == [
        (pid, "-", "-", "-", "started"),
        (pid, "42.0", "7", "1", "vm_started name=alice_42.0 command=CONDOR_VM_START"),
        (pid, "42.0", "8", "1", "request_done result=NULL command=CONDOR_VM_STATUS"),
        (pid, "42.0", "-", "-", 'WARNING: eof detail="Request buffer closed, exiting"'),
    ]


def test_worker_threads_get_the_job_id(tmp_path: Path, restore_log):
    """The job id is the process's, not a context variable: new threads have it too."""
    import threading

    path = tmp_path / "g.log"
    log.setup(path=str(path))
    log.bind_job("42.0")
    thread = threading.Thread(target=lambda: log.get().info("from_a_thread"))
    thread.start()
    thread.join()
    assert json.loads(path.read_text())["job_id"] == "42.0"


def test_a_log_that_cannot_be_opened_falls_back_to_stderr(tmp_path: Path, restore_log, capsys):
    log.setup(path=str(tmp_path / "missing" / "g.log"))
    log.get().info("hello")
    err = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["event"] for line in err] == ["log_fallback", "hello"]


def test_a_job_id_beyond_a_c_int_is_no_job_id() -> None:
    """Found by fuzzing: a 4,302-digit ClusterId made int() raise on the way to the
    START's dispatch (Python's digit limit), after the START's S was written."""
    from vmgahp import log

    assert log.job_id_from_ad(["ClusterId = " + "7" * 5000, "ProcId = 0"]) is None
    assert log.job_id_from_ad(["ClusterId = 00042", "ProcId = 003"]) == "42.3"
    assert log.job_id_from_ad(["ClusterId = 0", "ProcId = 0"]) == "0.0"
