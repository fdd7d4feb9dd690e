"""Level 3 of the fuzz tests: a real vmgahp process fed generated lines over pipes.

A writer thread streams the lines (never a QUIT) as fast as the pipe takes
them; a reader thread collects every line the daemon writes and checks that
no word of it could crash the starter (10 KiB, spec 2.3); the calling thread
walks the frames in order with the reference model and checks each reply.
Replies are pipelined, so their order is the only link between a line and
its answer: a missing or extra reply shows up as a mismatch at once.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from fuzz_lines import LineStream, RandomChooser
from fuzz_model import COMMANDS_TEXT, STARTER_WORD_LIMIT, ReplyModel, longest_starter_word, parse_result_line
from gahp_process import GahpProcess

REPLY_TIMEOUT = 20.0  # per read: longer than any single line can take
DRAIN_TIMEOUT = 120.0
_EOF = object()


class FuzzFailure(AssertionError):
    pass


@dataclass
class Stats:
    lines: int = 0  # generated lines written
    frames: int = 0  # lines the daemon saw (a raw LF inside a line makes two)
    replies: int = 0  # immediate replies checked
    accepted: int = 0  # VM commands answered S
    results: int = 0  # result lines read
    r_lines: int = 0
    seconds: float = 0.0
    kinds: Counter = field(default_factory=Counter)


class DaemonFuzz:
    def __init__(self, gahp: GahpProcess, seed: int, lines: int, job_ad: list[str]) -> None:
        self.gahp = gahp
        self.seed = seed
        self.target = lines
        self.job_ad = job_ad
        self.stats = Stats()
        self.replies: queue.Queue = queue.Queue()
        self.frames: queue.Queue = queue.Queue(maxsize=20000)  # the writer may run this far ahead
        self.problems: list[str] = []  # found by the threads
        self.outstanding: Counter = Counter()  # request id -> results still due
        self.recent: list[bytes] = []  # last frames checked, for the failure message
        self.async_on = True
        self.r_since_results = 0

    # ---------------------------------------------------------------- threads
    def _read(self) -> None:
        fd = self.gahp.proc.stdout.fileno()
        pending = b""
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self.replies.put(_EOF)
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if longest_starter_word(line) >= STARTER_WORD_LIMIT:
                    self.problems.append(f"a reply word of {longest_starter_word(line)} bytes: {line[:120]!r}")
                self.replies.put(line.decode("utf-8", "surrogateescape"))

    def _write(self, stream: LineStream) -> None:
        fd = self.gahp.proc.stdin.fileno()
        batch = bytearray()
        try:
            for index in range(self.target + 1):
                items = [stream.next()] if index < self.target else stream.closing()
                for line, frames in items:
                    self.frames.put(frames)
                    batch += line
                if len(batch) >= 1 << 14 or index % 128 == 0 or index == self.target:
                    _write_all(fd, bytes(batch))
                    batch.clear()
        except OSError as exc:
            self.problems.append(f"writing stdin failed: {exc}")
        finally:
            self.stats.lines = stream.lines
            self.frames.put(None)

    # ---------------------------------------------------------------- checks
    def fail(self, message: str) -> None:
        show = int(os.environ.get("VMGAHP_FUZZ_SHOW", "6"))  # frames in the message
        shown = "\n  ".join(repr(frame[:160]) if frame is not None else "<overlong>" for frame in self.recent[-show:])
        raise FuzzFailure(f"{message}\n(seed {self.seed}, frame {self.stats.frames}; "
                          f"reproduce with VMGAHP_FUZZ_SEED={self.seed})\nlast frames:\n  {shown}\n"
                          f"log tail: {self.gahp.stderr_tail()[-600:]}")

    def reply(self) -> str:
        """The next line that is not an R, checking the R rules (spec 2.6) on the way."""
        while True:
            if self.problems:
                self.fail(self.problems[0])
            try:
                line = self.replies.get(timeout=REPLY_TIMEOUT)
            except queue.Empty:
                self.fail(f"no reply within {REPLY_TIMEOUT} s (hung?)")
            if line is _EOF:
                self.fail(f"the daemon closed stdout (exit {self.gahp.proc.poll()})")
            if line != "R":
                if " " not in line and line.startswith("R"):
                    self.fail(f"one-word reply {line[:40]!r} begins with R: the starter drops it")
                return line
            self.stats.r_lines += 1
            self.r_since_results += 1
            if not self.async_on or self.r_since_results > 1:
                self.fail(f"an R with async mode {'on' if self.async_on else 'off'} "
                          f"and {self.r_since_results - 1} R already since RESULTS")

    def results(self) -> int:
        head = self.reply().split(" ")
        if len(head) != 2 or head[0] != "S" or not head[1].isdigit():
            self.fail(f"RESULTS answered {' '.join(head)[:80]!r}")
        self.r_since_results = 0
        for _ in range(int(head[1])):
            line = self.reply()
            try:
                request_id, _ok, _text = parse_result_line(line)
            except AssertionError:
                self.fail(f"bad RESULTS line {line[:120]!r}")
            if self.outstanding[request_id] <= 0:
                self.fail(f"a result for request {request_id}, which has none due: {line[:120]!r}")
            self.outstanding[request_id] -= 1
            self.stats.results += 1
        return int(head[1])

    def check(self, model: ReplyModel, frame: Optional[bytes]) -> None:
        self.stats.frames += 1
        self.recent = (self.recent + [frame])[-60:]
        expect = model.expect(frame)
        self.stats.kinds[expect.name or expect.kind] += 1
        if expect.kind == "none":
            return
        self.stats.replies += 1
        if expect.kind == "results":
            self.results()
            return
        answer = self.reply()
        if expect.kind == "text":
            if answer != expect.text:
                self.fail(f"expected {expect.text[:60]!r}, got {answer[:120]!r}")
            if expect.name.startswith("ASYNC_MODE_"):
                self.async_on = expect.name == "ASYNC_MODE_ON"
                self.r_since_results = 0 if self.async_on else self.r_since_results
        elif expect.kind == "vm":
            due = self.outstanding[expect.request_id]
            if answer != "S" and not (answer == "E" and due > 0):
                self.fail(f"{expect.name} {expect.request_id} ({due} results due) answered {answer[:120]!r}")
            if answer == "S":
                self.outstanding[expect.request_id] += 1
                self.stats.accepted += 1
        else:
            self.fail(f"the stream held a {expect.kind}")

    def run(self) -> Stats:
        began = time.monotonic()
        threading.Thread(target=self._read, name="fuzz-reader", daemon=True).start()
        banner = self.reply()
        if not banner.startswith("$VMGahpVersion "):
            self.fail(f"banner {banner!r}")
        self._send(b"COMMANDS\r\n")
        if self.reply() != COMMANDS_TEXT:
            self.fail("COMMANDS reply")
        self._send(b"SUPPORT_VMS\r\nASYNC_MODE_ON\r\n")
        types = tuple(self.reply().split(" ")[1:])
        if self.reply() != "S":
            self.fail("ASYNC_MODE_ON reply")
        model = ReplyModel(types, banner)
        stream = LineStream(RandomChooser(self.seed), self.job_ad, allow_quit=False, types=types)
        writer = threading.Thread(target=self._write, args=(stream,), name="fuzz-writer", daemon=True)
        writer.start()
        while True:
            try:
                frames = self.frames.get(timeout=REPLY_TIMEOUT)
            except queue.Empty:
                self.fail("the writer stalled: the daemon stopped reading stdin")
            if frames is None:
                break
            for frame in frames:
                self.check(model, frame)
        writer.join(REPLY_TIMEOUT)
        if self.problems:
            self.fail(self.problems[0])
        assert not model.in_ad and stream.framer.clean, "the stream did not end at a line boundary"
        self._drain()
        self._send(b"COMMANDS\r\n")
        if self.reply() != COMMANDS_TEXT or self.gahp.proc.poll() is not None:
            self.fail("COMMANDS after the stream")
        self._send(b"QUIT\r\n")
        if self.reply() != "S":
            self.fail("QUIT reply")
        code = self.gahp.wait(60)
        if code != 0:
            self.fail(f"exit code {code}")
        self._check_log()
        self.stats.seconds = time.monotonic() - began
        return self.stats

    def _drain(self) -> None:
        """Every request answered S has exactly one result: collect them all."""
        end = time.monotonic() + DRAIN_TIMEOUT
        while sum(self.outstanding.values()) > 0:
            if time.monotonic() > end:
                due = sorted(+self.outstanding)[:10]
                self.fail(f"results never came for requests {due}")
            self._send(b"RESULTS\r\n")
            if self.results() == 0:
                time.sleep(0.05)

    def _check_log(self) -> None:
        """A crash caught by a guard still answers, so look for the guards' log events."""
        log = self.gahp.work / "vmgahp.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        for event in ('"line_failed"', '"request_crashed"', "Traceback"):
            if event in text:
                start = text.index(event)
                self.fail(f"the log has {event}: {text[max(0, start - 300):start + 1500]}")

    def _send(self, data: bytes) -> None:
        _write_all(self.gahp.proc.stdin.fileno(), data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
