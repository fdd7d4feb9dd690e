"""Bytes and words on the wire: input framing, word splitting, escaping.

Pure functions and one small buffer class; no I/O. The rules are the C++
gahp's (spec 2.1-2.3), quirks included, because condor_starter was written
against them:

* an unescaped ``\\n`` ends a line, an unescaped ``\\r`` is dropped, an
  escaped ``\\n``/``\\r`` stays in the line (backslash included);
* every separator (space, tab, CR, LF) starts a new word, so doubled or
  trailing separators give empty words;
* a backslash makes the next character literal, except that an escaped
  character in the last position of the line is dropped.
"""

from __future__ import annotations

import re

_SEPARATORS = frozenset(" \t\r\n")
_MUST_ESCAPE = frozenset(" \\\r\n")
_SPLIT = re.compile("[ \t\r\n]")
INT_MAX = 0x7FFFFFFF  # request and VM ids are C ints on both sides
MAX_LINE_BYTES = 1 << 20  # longer lines are discarded as they stream in (the C++ has no limit)


class LineFramer:
    """Turns a byte stream into protocol lines (escape-aware, CR-tolerant).

    A line longer than ``max_line`` bytes is not kept: its bytes are dropped
    as they arrive and, once its newline comes, ``None`` stands for it in the
    list ``feed`` returns, so memory stays bounded whatever the peer sends.
    """

    __slots__ = ("_buf", "_escaped", "_overlong", "max_line")

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._buf = bytearray()
        self._escaped = False
        self._overlong = False
        self.max_line = max_line

    def feed(self, data: bytes) -> list[str | None]:
        """Add bytes; return every line they complete, without terminators."""
        lines: list[str | None] = []
        buf = self._buf
        escaped = self._escaped
        if not escaped and 0x5C not in data:
            # No backslash: every LF ends a line and every CR goes.
            *complete, rest = data.replace(b"\r", b"").split(b"\n")
            for piece in complete:
                self._append(buf, piece)
                lines.append(None if self._overlong else buf.decode("utf-8", "surrogateescape"))
                buf.clear()
                self._overlong = False
            self._append(buf, rest)
            return lines
        start = 0
        for index, byte in enumerate(data):
            if byte == 0x0A and not escaped:  # \n
                self._append(buf, data[start:index])
                lines.append(None if self._overlong else buf.decode("utf-8", "surrogateescape"))
                buf.clear()
                self._overlong = False
                start = index + 1
            elif byte == 0x0D and not escaped:  # \r: dropped
                self._append(buf, data[start:index])
                start = index + 1
            else:
                # A backslash toggles the flag; any other byte clears it.
                escaped = (not escaped) if byte == 0x5C else False
        self._append(buf, data[start:])
        self._escaped = escaped
        return lines

    def _append(self, buf: bytearray, piece: bytes) -> None:
        if self._overlong or not piece:
            return
        if len(buf) + len(piece) > self.max_line:
            self._overlong = True
            buf.clear()
            return
        buf += piece

    @property
    def pending(self) -> bool:
        """True when a partial line is buffered (it is dropped at EOF)."""
        return bool(self._buf) or self._overlong


def split_words(line: str) -> list[str]:
    """Split a command line into words exactly as the C++ gahp does."""
    if "\\" not in line:
        return _SPLIT.split(line)
    words: list[str] = []
    word: list[str] = []
    i = 0
    n = len(line)
    while i < n:
        ch = line[i]
        if ch == "\\":
            i += 1
            # The C++ appends the escaped byte only if it is not the last
            # byte of the line (vmgahp_common.cpp, parse_vmgahp_command); a
            # multi-byte character there has bytes after the escaped one: kept whole.
            if i < n - 1 or (i < n and not _one_byte(line[i])):
                word.append(line[i])
        elif ch in _SEPARATORS:
            words.append("".join(word))
            word = []
        else:
            word.append(ch)
        i += 1
    words.append("".join(word))
    return words


def _one_byte(ch: str) -> bool:
    """ASCII, or an undecodable byte carried as a lone surrogate (surrogateescape)."""
    return ch < "\x80" or "\udc80" <= ch <= "\udcff"


def escape(text: str) -> str:
    """Backslash-escape space, backslash, CR and LF for a reply word."""
    if not any(ch in _MUST_ESCAPE for ch in text):
        return text
    return "".join("\\" + ch if ch in _MUST_ESCAPE else ch for ch in text)


def result_line(request_id: int, ok: bool, text: str) -> str:
    """One RESULTS line: ``<id> 0|1 <text>``, an empty text sent as NULL."""
    return f"{request_id} {0 if ok else 1} {text or 'NULL'}"


def _digits_value(word: str) -> int | None:
    """The value of an ASCII digit string, never converting more than a C
    int's worth of digits (``int()`` of 5,000 digits raises)."""
    if not word or not (word.isascii() and word.isdigit()):
        return None
    significant = word.lstrip("0")
    if len(significant) > 10:
        return INT_MAX + 1  # beyond a C int, whatever its exact value
    return int(significant or "0")


def parse_request_id(word: str) -> int | None:
    """ASCII digits only, value > 0 and within a C int (the starter's type)."""
    value = _digits_value(word)
    return value if value is not None and 0 < value <= INT_MAX else None


def parse_vm_id(word: str) -> int | None:
    """ASCII digits only; the empty word passes and names no VM (spec 2.5),
    as does a value beyond a C int (0: no VM has it)."""
    if word == "":
        return 0
    value = _digits_value(word)
    if value is None:
        return None
    return value if value <= INT_MAX else 0


# C's number parsing, as the starter reads its words (strtol/strtod: the
# longest valid prefix, 0 when there is none; hex floats are not handled).
_C_SPACE = " \t\n\v\f\r"
_STRTOL = re.compile(r"[+-]?[0-9]+")
_STRTOD = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan)", re.I)
LONG_MAX = (1 << 63) - 1


def strtol(word: str) -> int:
    """C ``strtol(word, NULL, 10)``: "12abc" is 12, "x" is 0; clamped to a C long."""
    match = _STRTOL.match(word.lstrip(_C_SPACE))
    if match is None:
        return 0
    text = match.group()
    negative = text[0] == "-"
    digits = text.lstrip("+-").lstrip("0") or "0"
    if len(digits) > 19:  # beyond a long (and int() of 5,000 digits raises)
        return -LONG_MAX - 1 if negative else LONG_MAX
    value = -int(digits) if negative else int(digits)
    return max(-LONG_MAX - 1, min(LONG_MAX, value))


def strtod(word: str) -> float:
    """C ``strtod(word, NULL)``: "1.5s" is 1.5, "x" is 0.0."""
    match = _STRTOD.match(word.lstrip(_C_SPACE))
    return float(match.group()) if match else 0.0


def is_request_id(word: str) -> bool:
    return parse_request_id(word) is not None


def is_vm_id(word: str) -> bool:
    return parse_vm_id(word) is not None
