"""A reference model of the wire rules and immediate replies, from the spec alone.

Written from VMGAHP-PROTOCOL.md sections 2 and 3 (and the deviations
docs/protocol.md documents), never from vmgahp's code, so that the fuzz
tests compare two independent readings of the spec. It works on bytes, as
the C++ gahp does: ``bytes.upper()``/``isdigit()`` are ASCII-only, which is
what ``strcasecmp`` and the C digit checks are.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import NamedTuple, Optional

INT_MAX = 2**31 - 1
STARTER_WORD_LIMIT = 10 * 1024  # read_argv's buffer: a word this long crashes the starter

# Spec 3: the COMMANDS list, in order; VM commands take 3 words, the rest 1.
NAMES = (
    "ASYNC_MODE_ON", "ASYNC_MODE_OFF", "CONDOR_VM_START", "CONDOR_VM_STOP", "CONDOR_VM_SUSPEND",
    "CONDOR_VM_SOFT_SUSPEND", "CONDOR_VM_RESUME", "CONDOR_VM_CHECKPOINT", "CONDOR_VM_STATUS",
    "CONDOR_VM_GETPID", "QUIT", "VERSION", "COMMANDS", "SUPPORT_VMS", "RESULTS", "CLASSAD", "CLASSAD_END",
)
VM_NAMES = frozenset(name for name in NAMES if name.startswith("CONDOR_VM_"))
COMMANDS_TEXT = "S " + " ".join(NAMES)
_SPECIALS = re.compile(rb"[\\\r\n]")
_SEPARATOR = re.compile(rb"[ \t\r\n]")


class FramerModel:
    """Spec 2.1: LF ends a line, CR is dropped, a backslash escapes the next
    byte; a line longer than ``max_line`` bytes becomes ``None`` (vmgahp)."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.buf = bytearray()
        self.escaped = False

    def feed(self, data: bytes) -> list[Optional[bytes]]:
        out: list[Optional[bytes]] = []
        start = 0
        for match in _SPECIALS.finditer(data):
            index = match.start()
            if index > start:  # plain bytes clear the escape
                self.buf += data[start:index]
                self.escaped = False
            byte = data[index]
            if self.escaped:
                self.buf.append(byte)
                self.escaped = False
            elif byte == 0x5C:
                self.buf.append(byte)
                self.escaped = True
            elif byte == 0x0A:
                out.append(None if len(self.buf) > self.max_line else bytes(self.buf))
                self.buf.clear()
            # an unescaped CR: dropped
            start = index + 1
        if start < len(data):
            self.buf += data[start:]
            self.escaped = False
        return out

    @property
    def clean(self) -> bool:
        """At a line boundary: nothing buffered, no escape pending."""
        return not self.buf and not self.escaped


def gahp_words(line: bytes) -> list[bytes]:
    """Spec 2.2 on bytes: every separator starts a word; a backslash makes the
    next byte literal unless that byte is the line's last one."""
    if b"\\" not in line:
        return _SEPARATOR.split(line)
    words: list[bytes] = []
    word = bytearray()
    i, n = 0, len(line)
    while i < n:
        byte = line[i]
        if byte == 0x5C:
            if i + 1 < n - 1:
                word.append(line[i + 1])
            i += 2
            continue
        if byte in b" \t\r\n":
            words.append(bytes(word))
            word.clear()
        else:
            word.append(byte)
        i += 1
    words.append(bytes(word))
    return words


def starter_words(line: bytes) -> list[bytes]:
    """Spec 2.3, the starter's read_argv: a backslash makes the next byte
    literal and goes, an unescaped CR is ignored, an unescaped space ends a word."""
    words: list[bytes] = []
    word = bytearray()
    escaped = False
    for byte in line:
        if escaped:
            word.append(byte)
            escaped = False
        elif byte == 0x5C:
            escaped = True
        elif byte == 0x0D:
            pass
        elif byte == 0x20:
            words.append(bytes(word))
            word.clear()
        else:
            word.append(byte)
    words.append(bytes(word))
    return words


def longest_starter_word(line: bytes) -> int:
    if len(line) < STARTER_WORD_LIMIT:
        return len(line)  # cheap: no word can be longer than its line
    return max(len(word) for word in starter_words(line))


def digits_value(word: bytes) -> Optional[Decimal]:
    """Exact value of an ASCII digit string, any length (no int() limit)."""
    return Decimal(word.decode("ascii")) if word.isdigit() else None


def request_id(word: bytes) -> Optional[int]:
    """Spec 2.5: digits, > 0; vmgahp: within a C int, else E."""
    value = digits_value(word)
    return int(value) if value is not None and 0 < value <= INT_MAX else None


def vm_id(word: bytes) -> Optional[int]:
    """Spec 2.5: digits or the empty word (VM 0); vmgahp: beyond a C int is 0."""
    if word == b"":
        return 0
    value = digits_value(word)
    if value is None:
        return None
    return int(value) if value <= INT_MAX else 0


def command_of(frame: Optional[bytes]) -> Optional[tuple[str, list[bytes]]]:
    """The canonical command name and words of a line, if it names one with the right arity."""
    if frame is None:
        return None
    words = gahp_words(frame)
    name = words[0].upper().decode("latin-1")
    if name not in NAMES or len(words) != (3 if name in VM_NAMES else 1):
        return None
    return name, words


class Expect(NamedTuple):
    kind: str  # "none", "text", "results", "vm", "quit"
    name: str = ""  # the command, when the line is one
    text: str = ""  # "text": the exact reply
    request_id: int = 0  # "vm"
    vm_type: str = ""  # "vm", START
    vm_id: int = 0  # "vm", the others
    ad: Optional[tuple[str, ...]] = None  # "vm", START: the stored ad


NOTHING = Expect("none")
E = Expect("text", text="E")


class ReplyModel:
    """Which immediate reply a line must get (spec 2.4, 3, 3.2, 3.3, 1.9).

    Pending request ids are left to the caller (it knows when results
    arrive); everything else here is determined by the lines alone."""

    def __init__(self, types: tuple[str, ...], version: str) -> None:
        self.types = types
        self.version = version
        self.in_ad = False
        self.ad: Optional[list[str]] = None
        self.async_on = True
        self.quitting = False

    def expect(self, frame: Optional[bytes]) -> Expect:
        if self.quitting:
            return NOTHING
        if self.in_ad:
            if frame is not None and frame.upper() == b"CLASSAD_END":
                self.in_ad = False
                return Expect("text", "CLASSAD_END", "S")
            if frame is not None:
                assert self.ad is not None
                self.ad.append(frame.decode("utf-8", "surrogateescape"))
            return NOTHING
        found = command_of(frame)
        if found is None:
            return E
        name, words = found
        if name in VM_NAMES:
            return self._vm(name, words)
        return self._local(name)

    def _vm(self, name: str, words: list[bytes]) -> Expect:
        rid = request_id(words[1])
        if rid is None:
            return E
        if name == "CONDOR_VM_START":
            vm_type = words[2].lower().decode("latin-1")
            if vm_type not in self.types:
                return E
            ad = tuple(self.ad) if self.ad is not None else None
            return Expect("vm", name, request_id=rid, vm_type=vm_type, ad=ad)
        vid = vm_id(words[2])
        if vid is None:
            return E
        return Expect("vm", name, request_id=rid, vm_id=vid)

    def _local(self, name: str) -> Expect:
        texts = {"COMMANDS": COMMANDS_TEXT, "SUPPORT_VMS": " ".join(("S", *self.types)),
                 "VERSION": "S " + self.version}
        if name in texts:
            return Expect("text", name, texts[name])
        if name == "RESULTS":
            return Expect("results", name)
        if name == "QUIT":
            self.quitting = True
            return Expect("quit", name)
        if name == "CLASSAD":
            self.in_ad, self.ad = True, []
        elif name == "CLASSAD_END":
            self.ad = None
        elif name.startswith("ASYNC_MODE_"):
            self.async_on = name == "ASYNC_MODE_ON"
        return Expect("text", name, "S")


def parse_result_line(line: str) -> tuple[int, bool, str]:
    """``<id> <0|1> <text>`` (spec 2.7), or AssertionError."""
    parts = line.split(" ", 2)
    assert len(parts) == 3 and parts[0].isdigit() and parts[1] in ("0", "1") and parts[2], line[:200]
    rid = int(parts[0])
    assert 0 < rid <= INT_MAX, line[:200]
    return rid, parts[1] == "0", parts[2]
