"""The starter's side of the VM GAHP: a pure state machine, the counterpart of
:class:`vmgahp.protocol.session.GahpSession`.

Theory of operation
-------------------
A shell writes the bytes :meth:`GahpClient.send_line` and
:meth:`GahpClient.request` return (lines end in CRLF, as condor_starter writes
them), hands whatever it reads to :meth:`GahpClient.receive_data`, and asks
:meth:`GahpClient.next_event` for one event at a time (``NEED_DATA``: read
more). Nothing is parsed before it is asked for, because the starter reads
only when it expects something: a line waiting in the pipe is the reply to
the command that was written before it was read.

Every line sent is classified as the gahp will see it (``wire.split_words``
and the command table): inside a CLASSAD block it gets no reply, ``RESULTS``
gets ``S <n>`` and n lines, anything else one line. So the client knows which
reply is due next, which requests are pending, and stores each result under
its request id until it is taken.

Receiving follows the starter (spec 2.3, 2.7, 6.1):

* the banner: bytes before the first ``$`` are skipped, backslashes dropped,
  at most 359 bytes up to the LF (``command_version``);
* every other line with ``read_argv``'s rules: a backslash makes the next byte
  literal and is removed, an unescaped CR is ignored, each unescaped space
  ends a word, LF ends the line; a word of 10 KiB or more is a
  :class:`ProtocolError` (the real starter ASSERTs);
* any line of one word beginning with ``R`` is a :class:`Notification`,
  wherever it lands, inside a RESULTS batch included;
* ``RESULTS``: ``S <n>`` (strtol, >= 0), then n lines; a line whose id is not
  > 0 is skipped, a result for an unknown or abandoned request is not stored.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final, NamedTuple, Optional, Union

from vmgahp.protocol import commands, wire
from vmgahp.protocol.commands import Kind

FIRST_REQUEST_ID = 2  # m_next_reqid starts at 1 and new_reqid() increments first
LAST_REQUEST_ID = 990_000_000  # then the ids roll over to 1
MAX_WORD = 10 * 1024  # read_argv's buffer: the limit is per word
MAX_BANNER = 360  # command_version's buffer

NO_REPLY, ONE_LINE, BATCH = "none", "one line", "batch"


class ProtocolError(Exception):
    """The gahp broke the protocol where the real starter gives up."""


class WordTooLong(ProtocolError):
    """A reply word of 10 KiB or more: the real starter ASSERTs (crashes)."""


# ---------------------------------------------------------------- events
@dataclass(frozen=True)
class Banner:
    version: str  # from the first '$', backslashes dropped
    line: str


@dataclass(frozen=True)
class Notification:
    """A one-word line beginning with R: results are waiting."""

    words: tuple[str, ...]
    line: str


@dataclass(frozen=True)
class Reply:
    """The immediate reply to one command."""

    command: Optional[str]  # canonical name; None for a line the gahp will refuse
    words: tuple[str, ...]
    line: str
    request_id: Optional[int] = None  # a VM command's

    @property
    def ok(self) -> bool:
        return self.words[0].startswith("S")  # the starter tests argv[0][0] == 'S'


@dataclass(frozen=True)
class Result:
    request_id: int
    ok: bool
    text: str  # the words after the status, joined by spaces ("NULL" stays "NULL")
    words: tuple[str, ...]  # the whole line as read_argv split it


@dataclass(frozen=True)
class Results:
    """A whole RESULTS reply."""

    words: tuple[str, ...]  # the "S <n>" line
    line: str
    results: tuple[Result, ...]  # the lines with an id > 0, in order
    lines: tuple[str, ...]  # every result line as received


@dataclass(frozen=True)
class Unexpected:
    """A line when no reply is due (the starter ignores it)."""

    words: tuple[str, ...]
    line: str


@dataclass(frozen=True)
class Closed:
    partial: bytes = b""  # a line cut short by EOF, dropped


class _NeedData(Enum):
    """A one-member enum, so that ``event is NEED_DATA`` narrows the type."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"

    __str__ = __repr__


NEED_DATA: Final = _NeedData.NEED_DATA
Event = Union[Banner, Notification, Reply, Results, Unexpected, Closed]


# --------------------------------------------------------------- sending
class Line(NamedTuple):
    """A line as the gahp will take it."""

    reply: str  # NO_REPLY, ONE_LINE or BATCH
    command: Optional[str]  # canonical name of a well-formed command
    request_id: Optional[int]  # a well-formed VM command's
    in_ad: bool  # inside a CLASSAD block after this line


def classify(text: str, in_ad: bool) -> Line:
    """What the gahp makes of ``text`` (``session.receive_line``'s rules)."""
    if in_ad:
        if text.isascii() and text.upper() == "CLASSAD_END":
            return Line(ONE_LINE, "CLASSAD_END", None, False)
        return Line(NO_REPLY, None, None, True)
    words = wire.split_words(text)
    spec = commands.lookup(words[0])
    if spec is None or len(words) != spec.words:
        return Line(ONE_LINE, None, None, False)  # E
    if spec.kind is Kind.VM:
        return Line(ONE_LINE, spec.name, wire.parse_request_id(words[1]), False)
    return Line(BATCH if spec.name == "RESULTS" else ONE_LINE, spec.name, None, spec.name == "CLASSAD")


# -------------------------------------------------------------- receiving
def _decode(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", "surrogateescape")


def _too_long(size: int) -> WordTooLong:
    return WordTooLong(f"read_argv: a word of {size} bytes (the starter ASSERTs at {MAX_WORD})")


def _frame(data: bytearray) -> tuple[list[str], str] | None:
    """Take one line off ``data`` with read_argv's rules: (words, raw line), or None."""
    end = data.find(b"\n")
    head = data if end < 0 else data[:end]
    if 0x5C not in head:  # no backslash: split at once
        pieces = head.replace(b"\r", b"").split(b" ")
        longest = max(map(len, pieces))
        if longest >= MAX_WORD:
            raise _too_long(longest)
        if end < 0:
            return None
        del data[: end + 1]
        return [_decode(piece) for piece in pieces], _decode(head)
    words: list[str] = []
    word = bytearray()
    escaped = False
    for index, byte in enumerate(data):
        if escaped:
            escaped = False
        elif byte == 0x5C:
            escaped = True
            continue
        elif byte == 0x0D:
            continue
        elif byte == 0x20:
            words.append(_decode(word))
            word.clear()
            continue
        elif byte == 0x0A:
            words.append(_decode(word))
            raw = _decode(data[:index])
            del data[: index + 1]
            return words, raw
        word.append(byte)
        if len(word) >= MAX_WORD:
            raise _too_long(len(word))
    return None


def argv_words(line: str) -> list[str]:
    """One line (without its LF) split as read_argv splits it."""
    framed = _frame(bytearray(line.encode("utf-8", "surrogateescape") + b"\n"))
    assert framed is not None
    return framed[0]


def is_notification(words: list[str] | tuple[str, ...]) -> bool:
    return len(words) == 1 and words[0].startswith("R")


class GahpClient:
    """One starter conversation. ``banner=False``: the banner was read already."""

    def __init__(self, *, banner: bool = True) -> None:
        self.last_id = FIRST_REQUEST_ID - 1  # the id allocated last
        self.banner: str | None = None
        self.in_ad = False
        self.results: dict[int, Result] = {}  # arrived, not yet taken
        self._pending: set[int] = set()  # sent, no result yet
        self._abandoned: set[int] = set()  # given up; the id is reserved until the result comes
        self._due: deque[tuple[Line, bool]] = deque()  # replies due, oldest first; bool: id registered
        self._data = bytearray()
        self._closed = False
        self._want_banner = banner
        self._batch: tuple[Reply, list[Result], list[str], int] | None = None  # a RESULTS being read

    # ------------------------------------------------------------ state
    @property
    def buffered(self) -> int:
        """Bytes received and not parsed yet (a shell's "is there more to read?")."""
        return len(self._data)

    @property
    def pending(self) -> frozenset[int]:
        return frozenset(self._pending)

    @property
    def expecting(self) -> Line | None:
        """The line whose reply is due next."""
        return self._due[0][0] if self._due else None

    def _in_use(self, request_id: int) -> bool:
        return request_id in self._pending or request_id in self._abandoned or request_id in self.results

    def new_id(self) -> int:
        """new_reqid(): increment first, 1 after 990,000,000, skipping ids in use."""
        for _ in range(LAST_REQUEST_ID):
            self.last_id = self.last_id + 1 if self.last_id < LAST_REQUEST_ID else 1
            if not self._in_use(self.last_id):
                return self.last_id
        raise ProtocolError("every request id is in use")

    def take(self, request_id: int) -> Result | None:
        return self.results.pop(request_id, None)

    def abandon(self, request_id: int) -> None:
        """Give up on a request: its result, stored or still to come, is dropped."""
        if self.results.pop(request_id, None) is None and request_id in self._pending:
            self._pending.discard(request_id)
            self._abandoned.add(request_id)

    # ---------------------------------------------------------- sending
    def send_line(self, text: str) -> bytes:
        """The bytes of one line (CRLF added); the reply it gets is now due."""
        line = classify(text, self.in_ad)
        self.in_ad = line.in_ad
        if line.reply != NO_REPLY:
            registered = False
            if line.request_id is not None and not self._in_use(line.request_id):
                self._pending.add(line.request_id)
                registered = True
            self._due.append((line, registered))
        return text.encode("utf-8", "surrogateescape") + b"\r\n"

    def request(self, command: str, argument: str) -> tuple[int, bytes]:
        """A VM command under a new request id."""
        request_id = self.new_id()
        return request_id, self.send_line(f"{command} {request_id} {argument}")

    # -------------------------------------------------------- receiving
    def receive_data(self, data: bytes) -> None:
        """Bytes read from the gahp; ``b""`` is EOF."""
        if data:
            self._data += data
        else:
            self._closed = True

    def next_event(self) -> Event | _NeedData:
        while True:
            framed = self._banner_line() if self._want_banner else _frame(self._data)
            if framed is None:
                if not self._closed:
                    return NEED_DATA
                partial, self._data = bytes(self._data), bytearray()
                return Closed(partial)
            if isinstance(framed, Banner):
                return framed
            event = self._on_line(tuple(framed[0]), framed[1])
            if event is not None:
                return event

    def receive(self, data: bytes) -> list[Event]:
        """``receive_data``, then every event that is complete."""
        self.receive_data(data)
        events: list[Event] = []
        while not isinstance(event := self.next_event(), _NeedData):
            events.append(event)
            if isinstance(event, Closed):
                break
        return events

    def _banner_line(self) -> Banner | None:
        data = self._data
        start = data.find(b"$")
        if start < 0:
            del data[: data.rfind(b"\n") + 1]  # skipped; keep only the line's beginning
            return None
        end = data.find(b"\n", start)
        version = data[start : end if end >= 0 else len(data)].replace(b"\\", b"")
        if len(version) >= MAX_BANNER:
            raise ProtocolError(f"no banner line within {MAX_BANNER} bytes")
        if end < 0:
            return None
        line = _decode(data[data.rfind(b"\n", 0, start) + 1 : end])
        del data[: end + 1]
        self._want_banner = False
        self.banner = _decode(version)
        return Banner(self.banner, line)

    def _on_line(self, words: tuple[str, ...], raw: str) -> Event | None:
        if is_notification(words):
            return Notification(words, raw)
        if self._batch is not None:
            return self._result_line(words, raw)
        if not self._due:
            return Unexpected(words, raw)
        line, registered = self._due.popleft()
        reply = Reply(line.command, words, raw, line.request_id)
        if line.reply == BATCH:
            count = wire.strtol(words[1]) if len(words) >= 2 and reply.ok else -1
            if count < 0:
                raise ProtocolError(f"bad RESULTS reply {raw!r}")
            self._batch = (reply, [], [], count)
            return self._end_batch() if count == 0 else None
        if registered and not reply.ok:  # refused: no result will come
            self._pending.discard(line.request_id)
            self._abandoned.discard(line.request_id)
        return reply

    def _result_line(self, words: tuple[str, ...], raw: str) -> Results | None:
        assert self._batch is not None
        _head, results, lines, count = self._batch
        lines.append(raw)
        request_id = wire.strtol(words[0])
        if request_id > 0:  # else "Bad RESULTS line": skipped
            result = Result(request_id, len(words) > 1 and words[1] == "0", " ".join(words[2:]), words)
            results.append(result)
            if request_id in self._abandoned:
                self._abandoned.discard(request_id)  # late: dropped, the id is free again
            elif request_id in self._pending:
                self._pending.discard(request_id)
                self.results[request_id] = result
        return self._end_batch() if len(lines) == count else None

    def _end_batch(self) -> Results:
        assert self._batch is not None
        head, results, lines, _count = self._batch
        self._batch = None
        return Results(head.words, head.line, tuple(results), tuple(lines))
