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

_SEPARATORS = frozenset(" \t\r\n")
_MUST_ESCAPE = frozenset(" \\\r\n")


class LineFramer:
    """Turns a byte stream into protocol lines (escape-aware, CR-tolerant)."""

    __slots__ = ("_buf", "_escaped")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._escaped = False

    def feed(self, data: bytes) -> list[str]:
        """Add bytes; return every line they complete, without terminators."""
        lines: list[str] = []
        buf = self._buf
        escaped = self._escaped
        for byte in data:
            if byte == 0x0A and not escaped:  # \n
                lines.append(buf.decode("utf-8", "surrogateescape"))
                buf.clear()
            elif byte == 0x0D and not escaped:  # \r
                pass
            else:
                buf.append(byte)
                # A backslash toggles the flag; any other byte clears it.
                escaped = (not escaped) if byte == 0x5C else False
        self._escaped = escaped
        return lines

    @property
    def pending(self) -> bool:
        """True when a partial line is buffered (it is dropped at EOF)."""
        return bool(self._buf)


def split_words(line: str) -> list[str]:
    """Split a command line into words exactly as the C++ gahp does."""
    words = [""]
    i = 0
    n = len(line)
    while i < n:
        ch = line[i]
        if ch == "\\":
            i += 1
            # The C++ appends the escaped character only if it is not the
            # last one of the line (vmgahp_common.cpp, parse_vmgahp_command).
            if i < n - 1:
                words[-1] += line[i]
        elif ch in _SEPARATORS:
            words.append("")
        else:
            words[-1] += ch
        i += 1
    return words


def escape(text: str) -> str:
    """Backslash-escape space, backslash, CR and LF for a reply word."""
    if not any(ch in _MUST_ESCAPE for ch in text):
        return text
    return "".join("\\" + ch if ch in _MUST_ESCAPE else ch for ch in text)


def result_line(request_id: int, ok: bool, text: str) -> str:
    """One RESULTS line: ``<id> 0|1 <text>``, an empty text sent as NULL."""
    return f"{request_id} {0 if ok else 1} {text or 'NULL'}"


def is_request_id(word: str) -> bool:
    """ASCII digits only, value > 0 and within a C int (the starter's type)."""
    return word.isascii() and word.isdigit() and 0 < int(word) <= 0x7FFFFFFF


def is_vm_id(word: str) -> bool:
    """ASCII digits only; the empty word passes and names no VM (spec 2.5)."""
    return word == "" or (word.isascii() and word.isdigit())
