"""Command-line parsing with the C++ gahp's rules (spec 1.1, 1.2, Q16).

``vmgahp [DaemonCore flags] -M <mode> [vmtype <type>] [match <name>]``.
Leading DaemonCore flags (``-f``, ``-t`` ...) are accepted and mostly ignored;
the mode is read with C ``atoi`` semantics, and the ``vmtype`` / ``match``
keywords match by prefix, as in the C++.
"""

from __future__ import annotations

from vmgahp.errors import VmgahpError

TEST, IO, WORKER, STANDALONE, KILL = 0, 1, 2, 3, 4

# DaemonCore flags that take a value, and those that do not.
_DC_WITH_VALUE = frozenset(
    {"-a", "-append", "-c", "-config", "-k", "-kill", "-l", "-log", "-local-name",
     "-p", "-port", "-pidfile", "-r", "-runfor", "-sock", "-cleanup"}
)
_DC_FLAGS = frozenset(
    {"-f", "-foreground", "-t", "-term", "-b", "-background", "-q", "-quiet",
     "-d", "-dynamic", "-v", "-version", "-h", "-help"}
)

USAGE = """Usage: vmgahp -f [-t] -M <mode> [vmtype <type>] [match <name>]
  -M 0  test (probe): print the machine-ad attributes for <type> and exit
  -M 3  server: speak the VM GAHP protocol on stdin/stdout (the starter's mode)
  -M 4  kill: destroy the VM named <name> and exit
Also: vmgahp run JOB.sub [--output DIR] [--resume DIR]"""


class UsageError(VmgahpError):
    """Bad argv: print usage, exit 1."""


class Invocation:
    """What argv asked for. (A plain class: this module is on the banner path.)"""

    __slots__ = ("mode", "terminal_log", "vm_type", "match")

    def __init__(self, mode: int, terminal_log: bool = False, vm_type: str = "", match: str = "") -> None:
        self.mode = mode
        self.terminal_log = terminal_log
        self.vm_type = vm_type
        self.match = match

    def __repr__(self) -> str:
        return f"Invocation({self.mode}, {self.terminal_log}, {self.vm_type!r}, {self.match!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Invocation) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__
        )


def c_atoi(text: str) -> int:
    """C ``atoi``: leading blanks, optional sign, digits; garbage gives 0."""
    text = text.lstrip(" \t\n\r\f\v")
    sign = 1
    if text and text[0] in "+-":
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    digits = ""
    for ch in text:
        if not ch.isdigit() or not ch.isascii():
            break
        digits += ch
    return sign * int(digits) if digits else 0


def _is_prefix_of(word: str, keyword: str) -> bool:
    # strncmp(word, keyword, strlen(word)) == 0: "", "v", "vm" ... match.
    return keyword.startswith(word)


def parse_argv(args: list[str]) -> Invocation:
    """``args`` excludes the program name."""
    terminal = False
    i = 0
    while i < len(args) and args[i] != "-M":
        flag = args[i]
        if flag in ("-t", "-term"):
            terminal = True
        if flag in _DC_WITH_VALUE:
            i += 2
        elif flag in _DC_FLAGS:
            i += 1
        else:
            break
    rest = args[i:]
    if len(rest) < 2 or rest[0] != "-M":
        raise UsageError("expected -M <mode>")
    mode = c_atoi(rest[1])
    if mode == IO:
        mode = STANDALONE  # deprecated, treated exactly like 3
    if mode not in (TEST, STANDALONE, KILL):
        raise UsageError(f"unsupported mode {rest[1]!r}")
    if mode == STANDALONE:
        return Invocation(mode, terminal)

    vm_type = match = None
    pairs = rest[2:]
    j = 0
    while j < len(pairs):
        word = pairs[j]
        if j + 1 >= len(pairs):
            raise UsageError(f"{word!r} needs a value")
        if _is_prefix_of(word, "vmtype"):
            vm_type = pairs[j + 1]
        elif _is_prefix_of(word, "match"):
            match = pairs[j + 1]
        else:
            raise UsageError(f"unknown keyword {word!r}")
        j += 2
    if vm_type is None:
        raise UsageError("vmtype is required")
    if mode == KILL and match is None:
        raise UsageError("match is required in kill mode")
    return Invocation(mode, terminal, vm_type.lower(), match or "")
