"""Issue 7 fuzzing: the wire functions, the session and the daemon process
fed generated and mutated lines, checked against tests/fuzz_model.py.

The normal suite runs a short version. The long one is selected by
``VMGAHP_FUZZ_LINES`` (see docs/protocol.md, "Fuzzing"); ``VMGAHP_FUZZ_SEED``
replays a seeded run (levels 2 bulk and 3 print their seed when they fail).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fuzz_daemon import DaemonFuzz
from fuzz_lines import HypothesisChooser, LineStream, RandomChooser, pick
from fuzz_model import INT_MAX, FramerModel, ReplyModel, gahp_words, parse_result_line, request_id, starter_words, vm_id
from gahp_process import GahpProcess, job_ad
from vmgahp.protocol import wire
from vmgahp.protocol.session import Dispatch, GahpSession, Quit, Request, Send
from vmgahp.protocol.wire import LineFramer

FUZZ_LINES = int(os.environ.get("VMGAHP_FUZZ_LINES") or 0)
LONG = FUZZ_LINES > 0
SEED = int(os.environ.get("VMGAHP_FUZZ_SEED") or random.randrange(1 << 32))
DAEMON_LINES = FUZZ_LINES or 5000
SESSION_LINES = FUZZ_LINES or 10000
FUZZ = settings(max_examples=2000 if LONG else 150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
VERSION = "$VMGahpVersion 0.0.1 Dec 1 2026 vmgahp-fuzz $"
FED: Counter = Counter()  # lines fed per level, reported at the end of the module
NOTES: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    began = time.monotonic()
    yield
    summary = ", ".join(f"{level} {count:,}" for level, count in sorted(FED.items()))
    line = f"fuzz: lines fed: {summary}; total {sum(FED.values()):,} in {time.monotonic() - began:.1f} s (seed {SEED})"
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # past the output capture
            for text in ("\n" + line, *NOTES):
                reporter.write_line(text)


# ============================================================ level 1: vmgahp.protocol.wire
PIECES = [b"a", b" ", b"\\", b"\r", b"\n", b"\r\n", b"\t", b"\x00", b"\xff", b"\xc3", b"\xa9",
          "\u00e9".encode(), "\u20ac".encode(), b"COMMANDS", b"7", b"\\\n", b"\\\r"]
streams = st.binary(max_size=300) | st.lists(st.sampled_from(PIECES), max_size=120).map(b"".join)


def decoded(frames):
    return [None if f is None else f.decode("utf-8", "surrogateescape") for f in frames]


@FUZZ
@given(streams, st.lists(st.integers(0, 300), max_size=12), st.integers(0, 40) | st.just(wire.MAX_LINE_BYTES))
def test_framer_lines_follow_the_spec_whatever_the_chunks(data, cuts, max_line):
    """Any bytes, any chunking: the same lines as the spec's byte-by-byte
    rules, ``None`` exactly for the lines longer than ``max_line``."""
    FED["wire"] += data.count(b"\n")
    whole = LineFramer(max_line).feed(data)
    framer = LineFramer(max_line)
    chunked, start = [], 0
    for cut in sorted(min(cut, len(data)) for cut in cuts) + [len(data)]:
        chunked += framer.feed(data[start:cut])
        start = cut
    model = FramerModel(max_line)
    assert whole == chunked == decoded(model.feed(data))
    assert framer.pending == bool(model.buf)


@settings(FUZZ, max_examples=12)
@given(st.integers(-2, 2), st.sampled_from([b"x", b"\\x", "\u00e9".encode()]), st.integers(1, 4))
def test_framer_limit_is_exact_at_one_mebibyte(delta, unit, chunks):
    """A line of exactly ``MAX_LINE_BYTES`` is kept; one byte more is ``None``."""
    FED["wire"] += 2
    line = (unit * (wire.MAX_LINE_BYTES // len(unit) + 1))[: wire.MAX_LINE_BYTES + delta]
    data = line + b"\r\nCOMMANDS\n"
    framer, out, step = LineFramer(), [], len(data) // chunks + 1
    for start in range(0, len(data), step):
        out += framer.feed(data[start:start + step])
    expected = FramerModel(wire.MAX_LINE_BYTES).feed(data)
    assert out == decoded(expected) and out[1] == "COMMANDS"
    if unit == b"x":
        assert (out[0] is None) == (delta > 0)


@FUZZ
@given(streams)
@example(b"COMMANDS\\\xc3\xa9")  # found by this test: the escape takes one byte of the last character
def test_split_words_is_the_cpp_splitter(line):
    """Word splitting on the decoded line gives the C++ (byte-wise) words."""
    FED["wire"] += 1
    words = wire.split_words(line.decode("utf-8", "surrogateescape"))
    assert [word.encode("utf-8", "surrogateescape") for word in words] == gahp_words(line)


words_st = st.lists(st.text(max_size=12) | st.sampled_from(["", " ", "\\", "\r\n", "\t", "a b", "7" * 5000]),
                    min_size=1, max_size=8)


@FUZZ
@given(words_st)
def test_escaped_words_survive_the_starter_and_the_gahp(words):
    """escape() then the starter's reader gives the words back; so does the
    gahp's framer and splitter when no word holds a tab (escape leaves tabs)."""
    FED["wire"] += 1
    line = " ".join(wire.escape(word) for word in words)
    assert starter_words(line.encode()) == [word.encode() for word in words]
    assert LineFramer().feed(line.encode() + b"\r\n") == [line]
    if not any("\t" in word for word in words):
        # the sentinel keeps the last-character quirk (spec 2.2) out of the way
        assert wire.split_words(line + " END") == [*words, "END"]


id_words = (st.text(max_size=14) | st.from_regex(r"\A[0-9]{0,14}\Z")
            | st.builds(lambda zeros, digits: "0" * zeros + digits, st.integers(0, 6000),
                        st.sampled_from(["", "1", "2147483647", "2147483648", "9" * 5000]))
            | st.sampled_from(["\u0663", "\u00b2", "+1", "-1", " 1", "1 ", "\x001"]))


@FUZZ
@given(id_words)
def test_ids_never_raise_and_stay_c_ints(word):
    """Request ids: digits in 1..INT_MAX, else None; VM ids: also '' (0), and
    0 beyond a C int. Exact values, whatever the length (Decimal reference)."""
    FED["wire"] += 1
    raw = word.encode("utf-8", "surrogateescape")
    rid, vid = wire.parse_request_id(word), wire.parse_vm_id(word)
    assert rid is None or 1 <= rid <= INT_MAX
    assert vid is None or 0 <= vid <= INT_MAX
    assert (rid, vid) == (request_id(raw), vm_id(raw))
    assert wire.is_request_id(word) == (rid is not None) and wire.is_vm_id(word) == (vid is not None)
    if rid is not None:
        assert Decimal(word) == rid


@FUZZ
@given(st.integers(1, INT_MAX), st.booleans(), st.text(alphabet=st.characters(exclude_characters="\n"), max_size=30))
def test_result_lines_parse(request_id_, ok, text):
    FED["wire"] += 1
    assert parse_result_line(wire.result_line(request_id_, ok, text)) == (request_id_, ok, text or "NULL")


# ============================================================ level 2: the session
TEXTS = ("", "NULL", "1", "VMGAHP_ERR_INTERNAL", "STATUS=Running CPUUTILIZATION=1.000000", "STATUS=Stopped")


class SessionCheck:
    """A GahpSession next to the model: every action list must be the model's."""

    def __init__(self) -> None:
        self.session = GahpSession(("xen", "kvm"), VERSION)
        self.model = ReplyModel(("xen", "kvm"), VERSION)
        self.pending: set[int] = set()
        self.queue: list[str] = []  # finished results not yet collected
        self.r_sent = False
        self.held = False  # a RESULTS waits for a result (or the next line)

    def line(self, frame: bytes | None) -> None:
        FED["session"] += 1
        actions = self.session.receive_line(None if frame is None else frame.decode("utf-8", "surrogateescape"))
        released = []
        if self.held and not self.model.quitting:  # any line answers a held RESULTS first
            released = self._reply()
        expected = released + self._expected(self.model.expect(frame))
        assert actions == expected, f"line {frame[:200] if frame else frame!r}"
        # Independently of the model: one reply, or for RESULTS "S n" and n lines.
        sends = [a.text for a in actions[len(released):] if isinstance(a, Send)]
        if sends:
            count = sends[0][2:]
            assert len(sends) == (1 + int(count) if sends[0].startswith("S ") and count.isdigit() else 1)

    def _expected(self, expect) -> list:
        if expect.kind == "none":
            return []
        if expect.kind == "text":
            self.r_sent = self.r_sent and expect.name != "ASYNC_MODE_ON"
            return [Send(expect.text)]
        if expect.kind == "quit":
            self.pending.clear()
            self.queue.clear()
            return [Quit()]
        if expect.kind == "results":
            if not self.queue and self.pending:
                self.held = True
                return []
            return self._reply()
        if expect.request_id in self.pending:
            return [Send("E")]
        self.pending.add(expect.request_id)
        return [Send("S"), Dispatch(Request(expect.request_id, expect.name, expect.vm_type, expect.vm_id,
                                            expect.ad))]

    def _reply(self) -> list:
        out = [Send(f"S {len(self.queue)}"), *map(Send, self.queue)]
        self.queue, self.r_sent, self.held = [], False, False
        return out

    def complete(self, request_id_: int, ok: bool, text: str) -> None:
        actions = self.session.complete(request_id_, ok, text)
        expected = []
        if request_id_ in self.pending and not self.model.quitting:
            self.pending.discard(request_id_)
            self.queue.append(f"{request_id_} {0 if ok else 1} {text or 'NULL'}")
            if self.held:  # R (the C++ order), then the held RESULTS' reply
                expected = [Send("R")] if self.model.async_on and not self.r_sent else []
                expected += self._reply()
            elif self.model.async_on and not self.r_sent:
                self.r_sent = True
                expected = [Send("R")]
        assert actions == expected, f"complete({request_id_}, {ok}, {text!r})"


def session_steps(ch, stream: LineStream, check: SessionCheck) -> None:
    """One step: a generated line, a result for a pending request, an
    overlong line, or a result nobody asked for."""
    roll = ch.below(20)
    if roll < 14:
        for frame in stream.next()[1]:
            check.line(frame)
    elif roll < 18 and check.pending:
        check.complete(pick(ch, sorted(check.pending)), ch.below(2) == 0, pick(ch, TEXTS))
    elif roll < 19:
        check.line(None)
    else:
        check.complete(pick(ch, (0, -1, INT_MAX, 10**12, stream.next_id + 1)), True, "1")


@FUZZ
@given(st.data())
def test_session_matches_the_model(data):
    """Random conversations (QUIT included): every reply is the model's."""
    ch = HypothesisChooser(data)
    stream = LineStream(ch, job_ad=["JobVMType = \"kvm\"", "VM_WORKING_DIR = \"/w\""], allow_quit=True)
    check = SessionCheck()
    for _ in range(1 + ch.below(40)):
        session_steps(ch, stream, check)


def test_session_bulk_random_lines():
    """The same at volume, seeded: a new session after each QUIT."""
    ch = RandomChooser(SEED)
    stream = LineStream(ch, job_ad=["JobVMType = \"kvm\""], allow_quit=True)
    check = SessionCheck()
    steps, before = 0, FED["session"]
    try:
        while FED["session"] - before < SESSION_LINES:
            steps += 1
            session_steps(ch, stream, check)
            if check.model.quitting:
                assert check.session.receive_line("COMMANDS") == [] and check.session.complete(2, True, "") == []
                check, stream.state = SessionCheck(), ReplyModel(("xen", "kvm"), "")
    except AssertionError as exc:
        raise AssertionError(f"seed {SEED} (VMGAHP_FUZZ_SEED), step {steps}: {exc}") from exc


# ============================================================ level 3: the daemon process
def test_daemon_answers_every_generated_line(work):
    """The process over pipes: every line outside an ad answered, in order,
    no word of 10 KiB, every S'd request's result once, COMMANDS and QUIT at the end."""
    gahp = GahpProcess(work, VM_GAHP_SHUTDOWN_TIMEOUT="1")
    try:
        stats = DaemonFuzz(gahp, SEED, DAEMON_LINES, job_ad(work)).run()
    finally:
        gahp.kill()
    FED["daemon"] += stats.lines
    assert stats.lines >= DAEMON_LINES and stats.replies > stats.lines // 2
    assert stats.accepted > 0 and stats.results == stats.accepted
    NOTES.append(f"daemon: {stats.lines:,} lines, {stats.frames:,} frames, {stats.replies:,} replies, "
                 f"{stats.accepted:,} requests (all results collected), {stats.r_lines:,} R, {stats.seconds:.1f} s")
