"""Replay VM GAHP protocol transcripts against a gahp daemon (vmgahp's own runner).

A transcript (format: ``tests/transcripts/README.md``) is one gahp process lifetime.
This module parses it, builds a private workspace, spawns the daemon over pipes the
way ``condor_starter`` does, plays the ``>`` lines and checks every reply.

Usage::

    python tests/transcript_runner.py [--cmd CMD] [-v] [--keep] FILE...

or from Python: ``run_file(path).passed``.

Rules (what PASS means)
=======================

Parsing
  P1  ``> TEXT`` sends TEXT + CRLF; a lone ``>`` sends an empty line. ``< TEXT``
      expects exactly TEXT; a lone ``<`` expects an empty line. ``<~ REGEX``
      expects a line that ``re.fullmatch``-es REGEX. Trailing blanks of transcript
      lines are dropped; ``{{SP}}`` and ``{{TAB}}`` stand for a space and a tab.
  P2  ``< R`` is the asynchronous notification. It is not positional (see R1-R4).
  P3  A RESULTS group is a sent line that the gahp splits into the single word
      RESULTS (outside a CLASSAD block) whose next expectation is ``< S <n>``;
      the n following ``<``/``<~`` lines are its results.
  P4  A banner line ``$VMGahpVersion ... $`` (and the VERSION reply
      ``S $VMGahpVersion ... $``) is matched by ``\\$VMGahpVersion \\S+ .*\\$``.
  P5  ``# @name ...`` lines are directives (see the README); an unknown directive
      or any other stray line is a transcript error. Other ``#`` lines are comments.

Workspace
  W1  ``/var/lib/condor/execute/dir_4242`` is replaced everywhere (argv, env, config,
      files, sent and expected lines; in regexes by the escaped temp path) by a
      fresh scratch dir, which is also the daemon's cwd and is chmod 0755.
  W2  ``@file`` creates files: a path ending in ``/`` is a directory; a disk (by
      extension or a description mentioning disk/image) is a 1 MiB sparse file;
      anything else is empty. Files outside the scratch dir go under a second temp
      dir and every mention of their path is rewritten. Running as root, the
      scratch dir and the files belong to VMGAHP_USER_UID/GID when the transcript
      sets them. ``@chmod PATH MODE`` then sets an octal mode.
  W3  ``@config NAME = VALUE`` goes into a condor_config file (CONDOR_CONFIG) and
      into ``_CONDOR_NAME``. Inherited CONDOR_CONFIG, ``_CONDOR_*`` and ``VMGAHP_*``
      variables are dropped. Defaults, unless the transcript sets the knob:
      VM_KVM_LIBVIRT_URI = VM_XEN_LIBVIRT_URI = test:///default and
      VM_GAHP_LOG = <private dir>/vmgahp.log. ``@env`` is applied last.
      ``<condor uid>`` in an @env value is the condor (else nobody) uid, never 0.

Checking
  C1  Expected lines are matched in order; R lines are consumed wherever they come.
  C2  Before each line is sent, output that is already waiting must be R only;
      after the last step the daemon gets a short grace period to show extra
      output. Any unexpected line, or a line ending in CRLF, is a FAIL.
  C3  A RESULTS group matches its lines as a multiset (exact lines and regexes, by
      a maximum bipartite matching). If the daemon has fewer results ready, RESULTS
      is re-sent (every 0.1 s, up to ``repoll_s``) and the replies are merged. A line
      matching nothing, too many lines, or too few after the re-polls, is a FAIL.
  C4  ``@close-stdin`` closes stdin; ``@signal NAME`` sends SIG<NAME> to the daemon;
      ``@eof``: stdout must close (only R lines before it); ``@exit N``: the daemon
      must exit with status N. ``@wait N`` is not slept (unless ``wait_scale`` or
      ``until_status`` say otherwise, see O3); ``@sleep S`` is.

Options for real hypervisors (``Options``; all off by default)
  O1  ``env``: NAME=VALUE pairs applied after everything else (W3); a ``_CONDOR_X``
      entry is also written to the condor_config file as ``X``.
  O2  ``file_sources``: transcript ``@file`` path (as written) -> a real file that is
      copied there instead of the sparse placeholder (then chowned and chmodded as W2).
  O3  ``@wait N`` sleeps ``N * wait_scale`` seconds. When ``until_status`` is set and
      the next sent line is a ``CONDOR_VM_STATUS`` whose collecting RESULTS line
      expects ``STATUS=X``, the runner instead calls ``until_status("X")`` every
      0.2 s until it returns true (out of band: nothing extra goes over the wire),
      for at most ``until_timeout`` seconds; a timeout is a FAIL.
  O4  ``run_skipped``: run files that carry ``@skip-harness``.
  O5  ``after_run(workspace)``: called after a passing run, before the workspace is
      removed (e.g. to read the guest's output disk); an AssertionError is a FAIL.
  O6  ``substitutions``: extra TEXT -> REPLACEMENT pairs applied like the scratch
      placeholder (W1) to argv, env, config, sent and expected lines - e.g. a unique
      ``ClusterId`` so that a real domain's name cannot clash with another job's on a
      shared libvirtd.

R lines
  R1  The window of an expected ``< R`` written after command C runs from the
      ``S`` reply to the last RESULTS/ASYNC_MODE_ON sent before C (its last re-poll
      for a RESULTS group; else the start of the process) to the end of the RESULTS
      group that collects C's request id (else the next group that expects n >= 1;
      else the end of the run), re-polls included. The gahp writes its output in
      order, so an R announcing a later result cannot precede that reply. One R
      may satisfy several overlapping windows.
  R2  Every expected R needs at least one R read inside its window (missing R).
  R3  Every R read must lie inside some window (stray R).
  R4  At most one R between two replies to RESULTS/ASYNC_MODE_ON (duplicate R).
"""

from __future__ import annotations

import argparse
import os
import pwd
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vmgahp.protocol.client import BATCH, classify
from vmgahp.protocol.wire import split_words as gahp_split  # noqa: F401 - tests read the gahp's own splitter (spec 2.2) as tr.gahp_split

SCRATCH_PLACEHOLDER = "/var/lib/condor/execute/dir_4242"
UID_PLACEHOLDER = "<condor uid>"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_CMD = [sys.executable, "-m", "vmgahp"]  # this interpreter's vmgahp
DISK_EXTENSIONS = (".qcow2", ".qcow", ".img", ".raw", ".iso", ".vmdk")
DISK_SIZE = 1 << 20
BANNER = re.compile(r"(S )?\$VMGahpVersion .*\$")
BANNER_PATTERN = r"\$VMGahpVersion \S+ .*\$"
RESULTS_HEADER = re.compile(r"S (\d+)")
INF = float("inf")


class TranscriptError(Exception):
    """The transcript itself is malformed."""


class StepFailure(Exception):
    """The daemon did not behave as the transcript says."""


class NoOutput(StepFailure):
    """Nothing arrived on stdout in time."""


# --------------------------------------------------------------------------- model
@dataclass
class Send:
    text: str
    line_no: int
    command: str | None = None  # the command's name; None for an ad line or a line the gahp refuses
    request_id: int | None = None
    clears_flag: bool = False  # RESULTS or ASYNC_MODE_ON (one word, not in an ad)
    is_results: bool = False


@dataclass
class Expect:
    text: str
    line_no: int
    regex: bool = False

    def describe(self) -> str:
        return f"{'<~' if self.regex else '<'} {self.text}"


@dataclass
class ResultsGroup:
    send: Send
    header: Expect
    lines: list[Expect]

    @property
    def line_no(self) -> int:
        return self.send.line_no

    def collects(self, request_id: int) -> bool:
        return any(e.text.split(" ", 1)[0] == str(request_id) for e in self.lines)


@dataclass
class CloseStdin:
    line_no: int


@dataclass
class Eof:
    line_no: int


@dataclass
class Exit:
    code: int
    line_no: int


@dataclass
class Signal:
    name: str
    line_no: int


@dataclass
class Sleep:
    seconds: float
    line_no: int
    real: bool  # @sleep is slept, @wait is not


Step = Send | Expect | ResultsGroup | CloseStdin | Eof | Exit | Signal | Sleep


@dataclass
class ExpectR:
    line_no: int
    command_step: int  # index of the command step the R belongs to
    window_start: int | None = None  # step index of a flag-clearing step; None = process start
    window_end: int | None = None  # step index of the collecting group; None = end of run


@dataclass
class FileSpec:
    path: str
    description: str


@dataclass
class Transcript:
    path: Path
    steps: list[Step] = field(default_factory=list)
    r_expectations: list[ExpectR] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    env: list[tuple[str, str]] = field(default_factory=list)
    config: list[tuple[str, str]] = field(default_factory=list)
    files: list[FileSpec] = field(default_factory=list)
    chmods: list[tuple[str, int]] = field(default_factory=list)
    kind: str | None = None
    sources: int = 0
    skip_reason: str | None = None
    requires_root: bool = False

    @property
    def name(self) -> str:
        return self.path.name


# ------------------------------------------------------------------------- parsing
def _expand(text: str) -> str:
    return text.replace("{{SP}}", " ").replace("{{TAB}}", "\t")


def _expectation(text: str, line_no: int, regex: bool) -> Expect:
    text = _expand(text)
    if not regex and BANNER.fullmatch(text):
        prefix = "S " if text.startswith("S ") else ""
        return Expect(prefix + BANNER_PATTERN, line_no, regex=True)
    if regex:
        try:
            re.compile(text)
        except re.error as exc:
            raise TranscriptError(f"line {line_no}: bad regex: {exc}") from exc
    return Expect(text, line_no, regex)


class _Classifier:
    """Tracks CLASSAD blocks so sent lines are classified as the gahp sees them
    (the protocol client's rules: ``classify`` says which reply a line gets)."""

    def __init__(self) -> None:
        self.in_ad = False

    def send(self, text: str, line_no: int) -> Send:
        line = classify(text, self.in_ad)
        self.in_ad = line.in_ad
        return Send(
            text,
            line_no,
            command=line.command,
            request_id=line.request_id,
            clears_flag=line.command in ("RESULTS", "ASYNC_MODE_ON"),
            is_results=line.reply == BATCH,
        )


def _directive(t: Transcript, raw: list, name: str, rest: str, line_no: int) -> None:
    if name == "argv":
        t.argv += shlex.split(rest)
    elif name == "env":
        key, sep, value = rest.partition("=")
        if not sep:
            raise TranscriptError(f"line {line_no}: @env needs NAME=VALUE")
        t.env.append((key.strip(), value))
    elif name == "config":
        key, sep, value = rest.partition("=")
        if not sep:
            raise TranscriptError(f"line {line_no}: @config needs NAME = VALUE")
        t.config.append((key.strip(), value.strip()))
    elif name == "file":
        path, _, description = rest.partition(" ")
        t.files.append(FileSpec(path, description))
    elif name == "chmod":
        path, _, mode = rest.partition(" ")
        t.chmods.append((path, int(mode.strip(), 8)))
    elif name == "skip-harness":
        t.skip_reason = rest or "skipped by the transcript"
    elif name == "require-root":
        t.requires_root = True
    elif name == "precondition":
        pass
    elif name == "close-stdin":
        raw.append(CloseStdin(line_no))
    elif name == "eof":
        raw.append(Eof(line_no))
    elif name == "exit":
        raw.append(Exit(int(rest), line_no))
    elif name == "signal":
        sig = rest.strip().upper().removeprefix("SIG")
        if not hasattr(signal, "SIG" + sig):
            raise TranscriptError(f"line {line_no}: unknown signal {rest!r}")
        raw.append(Signal(sig, line_no))
    elif name in ("wait", "sleep"):
        raw.append(Sleep(float(rest), line_no, real=name == "sleep"))
    else:
        raise TranscriptError(f"line {line_no}: unknown directive @{name}")


def parse_transcript(path: str | Path) -> Transcript:
    """Read a transcript file into steps, R expectations and set-up directives."""
    t = Transcript(Path(path))
    raw: list = []  # Send / Expect / "R" markers / other steps, in file order
    classifier = _Classifier()
    for line_no, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.rstrip(" \t\r\n")
        if not line:
            continue
        if line.startswith("#"):
            body = line[1:].strip()
            if body.startswith("@"):
                name, _, rest = body[1:].partition(" ")
                _directive(t, raw, name, rest.strip(), line_no)
            elif body.startswith("kind:"):
                t.kind = body[5:].strip()
            elif body.startswith("source:"):
                t.sources += 1
        elif line == ">" or line.startswith("> "):
            raw.append(classifier.send(_expand(line[2:]), line_no))
        elif line == "< R":
            raw.append(("R", line_no))
        elif line == "<" or line.startswith("< "):
            raw.append(_expectation(line[2:], line_no, regex=False))
        elif line.startswith("<~ "):
            raw.append(_expectation(line[3:], line_no, regex=True))
        else:
            raise TranscriptError(f"line {line_no}: not a transcript line: {line!r}")
    _build_steps(t, raw)
    _compute_windows(t)
    return t


def _build_steps(t: Transcript, raw: list) -> None:
    i = 0
    last_command: int | None = None
    while i < len(raw):
        item = raw[i]
        i += 1
        if isinstance(item, tuple):  # < R
            if last_command is None:
                raise TranscriptError(f"line {item[1]}: '< R' before any command")
            t.r_expectations.append(ExpectR(item[1], last_command))
            continue
        if isinstance(item, Send) and item.is_results:
            header, header_at = _next_expect(raw, i)
            match = header and not header.regex and RESULTS_HEADER.fullmatch(header.text)
            if match:
                group = ResultsGroup(item, header, [])
                t.steps.append(group)
                last_command = len(t.steps) - 1
                for skipped in raw[i:header_at]:  # R markers before the S <n> line
                    t.r_expectations.append(ExpectR(skipped[1], last_command))
                i = header_at + 1
                while len(group.lines) < int(match.group(1)):
                    if i >= len(raw):
                        raise TranscriptError(f"line {item.line_no}: RESULTS group is short")
                    nxt = raw[i]
                    i += 1
                    if isinstance(nxt, tuple):
                        t.r_expectations.append(ExpectR(nxt[1], last_command))
                    elif isinstance(nxt, Expect):
                        group.lines.append(nxt)
                    else:
                        raise TranscriptError(f"line {item.line_no}: RESULTS group is short")
                continue
        t.steps.append(item)
        if isinstance(item, Send):
            last_command = len(t.steps) - 1


def _next_expect(raw: list, start: int) -> tuple[Expect | None, int]:
    """The next expectation after ``start`` (R markers skipped)."""
    for j in range(start, len(raw)):
        if isinstance(raw[j], tuple):
            continue
        return (raw[j], j) if isinstance(raw[j], Expect) else (None, j)
    return None, len(raw)


def _clears_flag(step: Step) -> bool:
    return isinstance(step, ResultsGroup) or (isinstance(step, Send) and step.clears_flag)


def _compute_windows(t: Transcript) -> None:
    for r in t.r_expectations:
        c = r.command_step
        start = c if _clears_flag(t.steps[c]) else None
        if start is None:
            for s in range(c - 1, -1, -1):
                if _clears_flag(t.steps[s]):
                    start = s
                    break
        command = t.steps[c]
        request_id = command.request_id if isinstance(command, Send) else None
        groups = [g for g in range(c + 1, len(t.steps)) if isinstance(t.steps[g], ResultsGroup)]
        end = None
        if request_id is not None:
            end = next((g for g in groups if t.steps[g].collects(request_id)), None)
        if end is None:
            end = next((g for g in groups if t.steps[g].lines), None)
        r.window_start, r.window_end = start, end


# ----------------------------------------------------------------------- workspace
def _condor_uid() -> str:
    if os.geteuid() != 0:
        return str(os.geteuid())
    for name in ("condor", "nobody"):
        try:
            uid = pwd.getpwnam(name).pw_uid
        except KeyError:
            continue
        if uid > 0:
            return str(uid)
    return "65534"


def _positive_int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


@dataclass
class Workspace:
    """Private temp dirs of one run, and the placeholder substitutions."""

    root: Path
    scratch: Path
    aux: Path
    mapping: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def stderr_file(self) -> Path:
        return self.root / "gahp.stderr"

    @property
    def log_file(self) -> Path:
        return self.root / "vmgahp.log"

    def _sub(self, text: str, table: dict[str, str]) -> str:
        if not table:
            return text
        keys = sorted(table, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(k) for k in keys))
        return pattern.sub(lambda m: table[m.group(0)], text)

    def sub(self, text: str) -> str:
        return self._sub(text, self.mapping)

    def sub_regex(self, pattern: str) -> str:
        table = {}
        for key, value in self.mapping.items():
            table[key] = re.escape(value)
            table[re.escape(key)] = re.escape(value)
        return self._sub(pattern, table)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def make_workspace(
    t: Transcript, sources: dict[str, str | Path] | None = None, substitutions: dict[str, str] | None = None
) -> Workspace:
    root = Path(tempfile.mkdtemp(prefix="vmgahp-transcript-"))
    os.chmod(root, 0o755)  # the job user must reach the scratch and aux dirs
    scratch = root / "execute" / "dir_4242"
    aux = root / "aux"
    scratch.mkdir(parents=True)
    aux.mkdir()
    os.chmod(root / "execute", 0o755)
    os.chmod(aux, 0o755)
    mapping = {SCRATCH_PLACEHOLDER: str(scratch), **(substitutions or {})}
    for spec in t.files:
        if not spec.path.startswith(SCRATCH_PLACEHOLDER):
            mapping[spec.path.rstrip("/")] = str(aux) + spec.path.rstrip("/")
    ws = Workspace(root, scratch, aux, mapping)
    try:
        owner = _job_owner(t, ws)
        _create_files(t, ws, owner, sources or {})
        ws.env = _build_env(t, ws)
    except BaseException:
        ws.remove()
        raise
    return ws


def _job_owner(t: Transcript, ws: Workspace) -> tuple[int, int] | None:
    env = dict(t.env)
    uid = _positive_int(env.get("VMGAHP_USER_UID", "").replace(UID_PLACEHOLDER, _condor_uid()))
    if uid is None or os.geteuid() != 0:
        return None
    gid = _positive_int(env.get("VMGAHP_USER_GID")) or uid
    return uid, gid


def _create_files(
    t: Transcript, ws: Workspace, owner: tuple[int, int] | None, sources: dict[str, str | Path]
) -> None:
    os.chmod(ws.scratch, 0o755)  # the starter chmods the scratch dir 0755 (vm_proc.cpp:352-368)
    if owner:
        os.chown(ws.scratch, *owner)
    unknown = set(sources) - {spec.path for spec in t.files}
    if unknown:
        raise TranscriptError(f"file_sources for paths the transcript does not create: {sorted(unknown)}")
    for spec in t.files:
        target = Path(ws.sub(spec.path.rstrip("/")))
        inside = str(target).startswith(str(ws.scratch))
        _make_parents(target.parent, owner if inside else None)
        if spec.path in sources:  # O2: a real file instead of the placeholder
            shutil.copyfile(sources[spec.path], target)
        elif spec.path.endswith("/"):
            target.mkdir(exist_ok=True)
        elif _is_disk(spec):
            with open(target, "wb") as fh:
                fh.truncate(DISK_SIZE)  # sparse
        else:
            target.touch()
        if owner:
            os.chown(target, *owner)
    for path, mode in t.chmods:
        os.chmod(ws.sub(path.rstrip("/")), mode)


def _make_parents(directory: Path, owner: tuple[int, int] | None) -> None:
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        d.mkdir()
        os.chmod(d, 0o755)
        if owner:
            os.chown(d, *owner)


def _is_disk(spec: FileSpec) -> bool:
    words = spec.description.lower()
    return spec.path.lower().endswith(DISK_EXTENSIONS) or "disk" in words or "image" in words


def _build_env(t: Transcript, ws: Workspace) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "CONDOR_CONFIG" and not k.startswith(("_CONDOR_", "VMGAHP_"))
    }
    transcript_env = {k: ws.sub(v.replace(UID_PLACEHOLDER, _condor_uid())) for k, v in t.env}
    knobs = {name.upper() for name, _ in t.config}
    knobs |= {k[len("_CONDOR_"):].upper() for k in transcript_env if k.startswith("_CONDOR_")}
    defaults = {
        "VM_KVM_LIBVIRT_URI": "test:///default",
        "VM_XEN_LIBVIRT_URI": "test:///default",
        "VM_GAHP_LOG": str(ws.log_file),
    }
    config = [(k, v) for k, v in defaults.items() if k not in knobs]
    config += [(k, ws.sub(v)) for k, v in t.config]
    config_file = ws.root / "condor_config"
    config_file.write_text("".join(f"{k} = {v}\n" for k, v in config))
    env["CONDOR_CONFIG"] = str(config_file)
    for k, v in config:
        env[f"_CONDOR_{k}"] = v
    env.update(transcript_env)
    return env


# -------------------------------------------------------------------------- daemon
_EOF = object()


class Daemon:
    """The spawned gahp: stdin/stdout pipes and a thread that reads stdout lines."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, stderr: Path) -> None:
        self._stderr = open(stderr, "wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,
            bufsize=0,
        )
        self.lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self.lines.put(line.decode("utf-8", "surrogateescape"))
        if buf:
            self.lines.put(buf.decode("utf-8", "surrogateescape") + "<no newline>")
        self.lines.put(_EOF)

    def write_line(self, text: str) -> None:
        try:
            self.proc.stdin.write(text.encode("utf-8", "surrogateescape") + b"\r\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise StepFailure(f"cannot write to the daemon's stdin ({exc.__class__.__name__})") from exc

    def close_stdin(self) -> None:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass

    def signal(self, name: str) -> None:
        self.proc.send_signal(getattr(signal, "SIG" + name))

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        self._reader.join(timeout=5)
        self._stderr.close()


# -------------------------------------------------------------------------- runner
@dataclass
class RunResult:
    name: str
    status: str  # PASS, FAIL or SKIP
    message: str = ""
    details: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "PASS"

    def report(self) -> str:
        head = f"{self.status} {self.name}" + (f": {self.message}" if self.message else "")
        return head + ("\n" + self.details if self.details else "")


@dataclass
class Options:
    cmd: list[str] = field(default_factory=lambda: list(DEFAULT_CMD))
    timeout: float = 10.0  # per expected line, EOF and exit
    repoll_s: float = 10.0  # how long a RESULTS group may re-poll
    grace: float = 0.2  # wait for stray output after the last step
    keep: bool = False
    # For real hypervisors (rules O1-O5 in the module docstring).
    env: dict[str, str] = field(default_factory=dict)
    file_sources: dict[str, str | Path] = field(default_factory=dict)
    wait_scale: float = 0.0
    until_status: Callable[[str], bool] | None = None
    until_timeout: float = 120.0
    run_skipped: bool = False
    after_run: Callable[[Workspace], None] | None = None
    substitutions: dict[str, str] = field(default_factory=dict)


class _Run:
    """One execution of a transcript against a live daemon."""

    def __init__(self, t: Transcript, daemon: Daemon, ws: Workspace, opts: Options) -> None:
        self.t, self.daemon, self.ws, self.opts = t, daemon, ws, opts
        self.pos = 0  # event counter: every send and every line read
        self.r_positions: list[int] = []
        self.batch = 0  # number of flag-clearing replies seen
        self.r_batches: set[int] = set()
        self.awaiting_clear_reply: int | None = None  # step whose RESULTS/ASYNC_MODE_ON reply is due
        self.step_index = 0  # index of the step being executed
        self.clear_reply_pos: dict[int, int] = {}  # flag-clearing step -> position of its (last) S reply
        self.step_span: dict[int, tuple[int, int]] = {}
        self.eof = False
        self.last_sent: str | None = None
        self.exchange: list[str] = []
        self.current: Step | None = None

    # ----- low level
    def _tick(self) -> int:
        self.pos += 1
        return self.pos

    def _take(self, timeout: float) -> str | None:
        """Next raw line (R included), or None at EOF. Raises on timeout."""
        if self.eof:
            return None
        try:
            item = self.daemon.lines.get(timeout=timeout)
        except queue.Empty:
            raise NoOutput(f"no output within {self.opts.timeout:g} s") from None
        if item is _EOF:
            self.eof = True
            self.exchange.append("<EOF>")
            return None
        self.exchange.append(f"< {item}")
        if item.endswith("\r"):
            raise StepFailure(f"reply line ends in CRLF: {item!r}")
        return item

    def _note_r(self) -> None:
        position = self._tick()
        if self.batch in self.r_batches:
            raise StepFailure("a second R without a RESULTS/ASYNC_MODE_ON reply in between (duplicate R)")
        self.r_batches.add(self.batch)
        self.r_positions.append(position)

    def _line(self) -> str | None:
        """Next non-R line; R lines on the way are recorded. None at EOF."""
        deadline = time.monotonic() + self.opts.timeout
        while True:
            line = self._take(max(0.0, deadline - time.monotonic()))
            if line is None:
                return None
            if line == "R":
                self._note_r()
                continue
            self._tick()
            if self.awaiting_clear_reply is not None:
                if line.startswith("S"):
                    self.batch += 1
                    self.clear_reply_pos[self.awaiting_clear_reply] = self.pos
                self.awaiting_clear_reply = None
            return line

    def _drain(self) -> None:
        """Consume output already waiting; only R lines may be there (C2)."""
        while not self.eof:
            try:
                item = self.daemon.lines.get_nowait()
            except queue.Empty:
                return
            if item is _EOF:
                self.eof = True
                self.exchange.append("<EOF>")
                return
            self.exchange.append(f"< {item}")
            if item == "R":
                self._note_r()
            else:
                raise StepFailure(f"unexpected output {item!r}")

    def _send(self, send: Send) -> int:
        self._drain()
        position = self._tick()
        text = self.ws.sub(send.text)
        self.last_sent = text
        self.exchange.append(f"> {text}")
        self.daemon.write_line(text)
        if send.clears_flag:
            self.awaiting_clear_reply = self.step_index
        return position

    def _matches(self, expect: Expect, line: str) -> bool:
        if expect.regex:
            return re.fullmatch(self.ws.sub_regex(expect.text), line) is not None
        return line == self.ws.sub(expect.text)

    # ----- steps
    def _expect(self, step: Expect) -> None:
        try:
            line = self._line()
        except NoOutput as exc:
            raise StepFailure(f"expected {step.describe()!r}, {exc}") from None
        if line is None:
            raise StepFailure(f"expected {step.describe()!r}, got EOF")
        if not self._matches(step, line):
            raise StepFailure(f"expected {step.describe()!r}, got {line!r}")

    def _results(self, group: ResultsGroup) -> None:
        received: list[str] = []
        deadline = time.monotonic() + self.opts.repoll_s
        while True:
            self._send(group.send)
            header = self._line()
            match = RESULTS_HEADER.fullmatch(header or "")
            if not match:
                raise StepFailure(f"expected 'S <n>' (RESULTS reply), got {header!r}")
            for _ in range(int(match.group(1))):
                line = self._line()
                if line is None:
                    raise StepFailure("EOF inside a RESULTS reply")
                received.append(line)
            unmatched = self._unmatched(received, group.lines)
            if unmatched:
                raise StepFailure(f"unexpected result line {unmatched[0]!r}")
            if len(received) == len(group.lines):
                return
            if time.monotonic() > deadline:
                missing = [e.describe() for e in group.lines]
                raise StepFailure(f"results still missing after re-polls: got {received!r}, want {missing!r}")
            time.sleep(0.1)

    def _unmatched(self, received: list[str], expected: list[Expect]) -> list[str]:
        """Received lines left over by a maximum bipartite matching."""
        owner = [-1] * len(expected)  # expected index -> received index

        def assign(i: int, seen: set[int]) -> bool:
            for j, exp in enumerate(expected):
                if j in seen or not self._matches(exp, received[i]):
                    continue
                seen.add(j)
                if owner[j] == -1 or assign(owner[j], seen):
                    owner[j] = i
                    return True
            return False

        for i in range(len(received)):
            assign(i, set())
        matched = set(owner)
        return [line for i, line in enumerate(received) if i not in matched]

    def _eof(self) -> None:
        try:
            line = self._line()
        except NoOutput:
            raise StepFailure(f"expected EOF, stdout still open after {self.opts.timeout:g} s") from None
        if line is not None:
            raise StepFailure(f"expected EOF, got {line!r}")

    def _exit(self, step: Exit) -> None:
        try:
            code = self.daemon.proc.wait(timeout=self.opts.timeout)
        except subprocess.TimeoutExpired:
            raise StepFailure(f"daemon did not exit within {self.opts.timeout:g} s") from None
        if code < 0:
            raise StepFailure(f"daemon killed by signal {-code}, expected exit {step.code}")
        if code != step.code:
            raise StepFailure(f"daemon exited {code}, expected {step.code}")

    def _finish(self) -> None:
        """Grace period: nothing but R may follow the last step (C2)."""
        if self.eof:
            return
        time.sleep(self.opts.grace)
        self._drain()

    def _wait(self, step: Sleep, index: int) -> None:
        """``@wait``: scaled sleep, or poll until the next STATUS can hold (O3)."""
        status = self._next_expected_status(index) if self.opts.until_status else None
        if status is None:
            if self.opts.wait_scale > 0:
                time.sleep(step.seconds * self.opts.wait_scale)
            return
        deadline = time.monotonic() + self.opts.until_timeout
        while not self.opts.until_status(status):
            if time.monotonic() > deadline:
                raise StepFailure(f"@wait: the VM did not reach STATUS={status} within {self.opts.until_timeout:g} s")
            time.sleep(0.2)

    def _next_expected_status(self, index: int) -> str | None:
        """STATUS=X expected for the next sent line, if that is a CONDOR_VM_STATUS."""
        steps = self.t.steps
        send = next((s for s in steps[index + 1:] if isinstance(s, (Send, ResultsGroup))), None)
        if not isinstance(send, Send) or send.command != "CONDOR_VM_STATUS" or send.request_id is None:
            return None
        prefix = f"{send.request_id} "
        for group in steps[index + 1:]:
            if isinstance(group, ResultsGroup) and group.collects(send.request_id):
                for expect in group.lines:
                    if expect.text.startswith(prefix):
                        match = re.search(r"STATUS=(\w+)", expect.text)
                        return match.group(1) if match else None
        return None

    def execute(self) -> None:
        for index, step in enumerate(self.t.steps):
            self.current, self.step_index = step, index
            first = self.pos + 1
            if isinstance(step, Send):
                first = self._send(step)
            elif isinstance(step, Expect):
                self._expect(step)
            elif isinstance(step, ResultsGroup):
                self._drain()
                first = self.pos + 1
                self._results(step)
            elif isinstance(step, CloseStdin):
                self._drain()
                self.daemon.close_stdin()
            elif isinstance(step, Signal):
                self._drain()
                self.daemon.signal(step.name)
            elif isinstance(step, Sleep):
                if step.real:
                    time.sleep(step.seconds)
                else:
                    self._wait(step, index)
            elif isinstance(step, Eof):
                self._eof()
            elif isinstance(step, Exit):
                self._exit(step)
            self.step_span[index] = (first, self.pos)
        self.current = None
        self._finish()
        self._check_r_windows()

    def _window(self, r: ExpectR) -> tuple[float, float]:
        """Positions (start, end]: from the S reply of the flag-clearing step (its
        last re-poll for a RESULTS group) to the end of the collecting group."""
        start = 0
        if r.window_start is not None:
            start = self.clear_reply_pos.get(r.window_start, self.step_span[r.window_start][0])
        end = INF if r.window_end is None else self.step_span[r.window_end][1]
        return start, end

    def _check_r_windows(self) -> None:
        windows = [(r, self._window(r)) for r in self.t.r_expectations]
        for r, (start, end) in windows:
            if not any(start < p <= end for p in self.r_positions):
                raise StepFailure(f"missing R (expected by line {r.line_no})")
        for p in self.r_positions:
            if not any(start < p <= end for _, (start, end) in windows):
                raise StepFailure("stray R outside every window")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def run_transcript(t: Transcript, opts: Options | None = None) -> RunResult:
    """Run one parsed transcript; never raises for daemon misbehaviour."""
    opts = opts or Options()
    if t.skip_reason and not opts.run_skipped:
        return RunResult(t.name, "SKIP", t.skip_reason)
    if t.requires_root and os.geteuid() != 0:
        return RunResult(t.name, "SKIP", "needs root")
    ws = make_workspace(t, opts.file_sources, opts.substitutions)
    _apply_env_overrides(ws, opts.env)
    daemon = None
    run = None
    try:
        argv = list(opts.cmd) + [ws.sub(a) for a in t.argv]
        argv[0] = os.path.abspath(argv[0]) if os.sep in argv[0] else argv[0]
        daemon = Daemon(argv, ws.env, ws.scratch, ws.stderr_file)
        run = _Run(t, daemon, ws, opts)
        run.execute()
        if opts.after_run is not None:
            daemon.kill()  # after @exit this only reaps; the hook reads files the daemon used
            try:
                opts.after_run(ws)
            except AssertionError as exc:
                return RunResult(t.name, "FAIL", f"after_run: {exc}", _details(run, ws))
        return RunResult(t.name, "PASS")
    except StepFailure as exc:
        return RunResult(t.name, "FAIL", _where(run, exc), _details(run, ws))
    finally:
        if daemon is not None:
            daemon.kill()
        if not opts.keep:
            ws.remove()


def _apply_env_overrides(ws: Workspace, overrides: dict[str, str]) -> None:
    """O1: applied last; ``_CONDOR_X`` also goes into the condor_config file."""
    if not overrides:
        return
    ws.env.update(overrides)
    knobs = [(k[len("_CONDOR_"):], v) for k, v in overrides.items() if k.startswith("_CONDOR_")]
    if knobs:
        with open(ws.env["CONDOR_CONFIG"], "a") as handle:
            handle.write("".join(f"{k} = {v}\n" for k, v in knobs))


def _where(run: _Run | None, exc: StepFailure) -> str:
    if run is None:
        return str(exc)
    step = run.current
    line = f"line {step.line_no}: " if step is not None else "at the end: "
    sent = f" (last sent {run.last_sent!r})" if run.last_sent is not None else ""
    return f"{line}{exc}{sent}"


def _details(run: _Run | None, ws: Workspace) -> str:
    parts = []
    if run is not None:
        parts.append("exchange (last 30):\n  " + "\n  ".join(run.exchange[-30:]))
    stderr = _tail(ws.stderr_file)
    if stderr:
        parts.append("daemon stderr:\n" + stderr)
    log = _tail(ws.log_file)
    if log:
        parts.append("VM_GAHP_LOG:\n" + log)
    return "\n".join(parts)


def run_file(path: str | Path, opts: Options | None = None) -> RunResult:
    try:
        t = parse_transcript(path)
    except (TranscriptError, ValueError) as exc:
        return RunResult(Path(path).name, "FAIL", f"transcript error: {exc}")
    return run_transcript(t, opts)


def default_cmd() -> list[str]:
    env = os.environ.get("VMGAHP_CMD")
    return shlex.split(env) if env else list(DEFAULT_CMD)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--cmd", help="daemon command (default $VMGAHP_CMD or python -m vmgahp)")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--repoll-s", type=float, default=10.0)
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment override, applied last (repeatable)")
    parser.add_argument("--file", action="append", default=[], metavar="PATH=SOURCE",
                        help="copy SOURCE to the transcript's @file PATH (repeatable)")
    parser.add_argument("--wait-scale", type=float, default=0.0, help="sleep N*SCALE s at '@wait N'")
    parser.add_argument("--run-skipped", action="store_true", help="also run @skip-harness files")
    parser.add_argument("-v", "--verbose", action="store_true", help="details of failures")
    args = parser.parse_args(argv)
    opts = Options(
        cmd=shlex.split(args.cmd) if args.cmd else default_cmd(),
        timeout=args.timeout,
        repoll_s=args.repoll_s,
        keep=args.keep,
        env=dict(item.split("=", 1) for item in args.env),
        file_sources=dict(item.rsplit("=", 1) for item in args.file),
        wait_scale=args.wait_scale,
        run_skipped=args.run_skipped,
    )
    failed = passed = 0
    for path in args.files:
        result = run_file(path, opts)
        print(result.report() if args.verbose else f"{result.status} {result.name}"
              + (f": {result.message}" if result.message else ""))
        failed += result.status == "FAIL"
        passed += result.passed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
