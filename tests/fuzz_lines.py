"""Generated and mutated protocol lines for the fuzz tests.

One generator, two sources of choices: a :class:`RandomChooser` (seeded, for
the bulk runs through the session and the daemon: fast and reproducible from
its seed) and a :class:`HypothesisChooser` (inside ``@given``, so hypothesis
can shrink a failing conversation). Every decision is ``below(n)``, with the
plainest option at 0, so shrinking heads towards ordinary lines.
"""

from __future__ import annotations

import random
from typing import Optional, Protocol, Sequence, TypeVar

from hypothesis import strategies as st

from fuzz_model import NAMES, FramerModel, ReplyModel, command_of

T = TypeVar("T")
MAX_LINE = 1 << 20  # vmgahp's line limit (wire.MAX_LINE_BYTES); the model must agree


BYTE_ALPHABET = b" \t\r\n\\\x00\xff0123456789AZaz_=\"-+"


class Chooser(Protocol):
    def below(self, n: int) -> int: ...

    def blob(self, most: int) -> bytes: ...


class RandomChooser:
    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def below(self, n: int) -> int:
        return self._rng.randrange(n)

    def blob(self, most: int) -> bytes:
        rng = self._rng
        return bytes(rng.choice(BYTE_ALPHABET) if rng.getrandbits(1) else rng.getrandbits(8)
                     for _ in range(rng.randrange(most)))


class HypothesisChooser:
    """Draws are what hypothesis costs: one per decision, strategies cached."""

    _integers: dict[int, st.SearchStrategy] = {}
    _blobs: dict[int, st.SearchStrategy] = {}

    def __init__(self, data: st.DataObject) -> None:
        self._data = data

    def below(self, n: int) -> int:
        strategy = self._integers.get(n)
        if strategy is None:
            strategy = self._integers[n] = st.integers(0, n - 1)
        return self._data.draw(strategy)

    def blob(self, most: int) -> bytes:
        strategy = self._blobs.get(most)
        if strategy is None:
            strategy = self._blobs[most] = st.binary(max_size=most - 1) | st.lists(
                st.sampled_from([bytes([b]) for b in BYTE_ALPHABET]), max_size=most - 1).map(b"".join)
        return self._data.draw(strategy)


def pick(ch: Chooser, options: Sequence[T]) -> T:
    return options[ch.below(len(options))]


# Small odd words: ids at and beyond the C-int bounds, signs, non-ASCII digits,
# case-folding traps (str.upper/lower fold these to ASCII; strcasecmp does not),
# NUL, invalid UTF-8, lone CR, tabs, escapes, spaces and command names.
ODD = [
    b"", b"0", b"1", b"-1", b"+2", b"2147483647", b"2147483648", b"4294967298", b"00000000000000000002",
    "\u0663".encode(), "\u00b2".encode(), "\uff13".encode(),
    "\u017f".encode(), "\u212avm".encode(), "\u212aVM".encode(), "\u0131".encode(), "\u0130".encode(),
    "xen\u0307".encode(), b"KVM", b"kVm", b"Xen", b"vmware",
    b"\x00", b"a\x00b", b"kvm\x00", b"\xff\xfe", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
    b"\r", b"a\rb", b"\t", b"a\tb", b" ", b"  ",
    b"\\", b"\\2", b"2\\ 3", b"\\\\", b"\\\n", b"\\\r", "\\\u00e9".encode(), b"\\\xff", b"\\ ",
    b"QUIT", b"CLASSAD", b"CLASSAD_END", b"RESULTS", b"R", b"S", b"E",
]


def big_word(ch: Chooser) -> bytes:
    """The absurd sizes of issue 7: 5,000-digit numbers, 70,000-char words."""
    size = pick(ch, (5000, 70000, 4301, 10240, 10239, 6000))
    return pick(ch, (
        lambda: b"7" * size, lambda: b"0" * size + b"3", lambda: b"x" * size, lambda: b"\\" * (size + 1),
        lambda: b"\\ " * (size // 2), lambda: b"\xff" * size, lambda: b"\x00" * size,
        lambda: "\u00e9".encode() * (size // 2), lambda: b"\t" * size, lambda: b"9" * size + b"\\",
    ))()


def odd_word(ch: Chooser) -> bytes:
    roll = ch.below(100)
    if roll < 70:
        return pick(ch, ODD)
    if roll < 95:
        return ch.blob(24)
    return big_word(ch)


def cased(ch: Chooser, name: str) -> bytes:
    how = ch.below(4)
    if how == 0:
        return name.encode()
    if how == 1:
        return name.lower().encode()
    flips = ch.below(1 << len(name))
    return bytes(c ^ 0x20 if chr(c).isalpha() and flips >> i & 1 else c for i, c in enumerate(name.encode()))


class LineStream:
    """Lines (with their terminators) for a gahp, and the frames it will see.

    ``allow_quit`` False keeps any line that would be a QUIT out of the
    stream (so a run lasts until its end). ``job_ad`` lines, when given, show
    up in CLASSAD blocks so that some STARTs get past the ad checks."""

    TERMINATORS = (b"\r\n",) * 7 + (b"\n", b"\n", b"\r\r\n", b"\\\r\n", b"\r")

    def __init__(self, ch: Chooser, job_ad: Sequence[str] = (), allow_quit: bool = False,
                 types: tuple[str, ...] = ("xen", "kvm")) -> None:
        self.ch = ch
        self.job_ad = [line.encode() for line in job_ad]
        self.allow_quit = allow_quit
        self.framer = FramerModel(MAX_LINE)
        self.state = ReplyModel(types, "")
        self.next_id = 1
        self.recent: list[bytes] = []
        self.ad_queue: list[bytes] = []
        self.starts = 0
        self.lines = 0

    # ------------------------------------------------------------- words
    def request_word(self) -> bytes:
        roll = self.ch.below(10)
        if roll < 6 or not self.recent:
            self.next_id += 1
            word = str(self.next_id).encode()
            self.recent = (self.recent + [word])[-8:]
            return word
        if roll < 8:
            return pick(self.ch, self.recent)  # maybe still pending: E
        return odd_word(self.ch)

    def argument_word(self, name: str) -> bytes:
        if self.ch.below(4) == 3:
            return odd_word(self.ch)
        if name == "CONDOR_VM_START":
            return pick(self.ch, (b"kvm", b"KVM", b"xen", b"kvm", b"Kvm"))
        # VM ids count the STARTs (spec 2.5): aim at the latest ones too.
        latest = b"%d" % max(1, self.starts - self.ch.below(3))
        return pick(self.ch, (b"1", b"2", b"", latest, latest, b"0", b"3"))

    # ------------------------------------------------------------- lines
    def command_line(self) -> bytes:
        name = pick(self.ch, NAMES)
        words = [cased(self.ch, name)]
        if name.startswith("CONDOR_VM_"):
            words += [self.request_word(), self.argument_word(name)]
        return b" ".join(words)

    def mutated_line(self) -> bytes:
        line = bytearray(self.command_line())
        for _ in range(1 + self.ch.below(3)):
            at = self.ch.below(len(line) + 1)
            how = self.ch.below(7)
            if how == 0:
                line[at:at] = odd_word(self.ch)
            elif how == 1:
                line[at:at + 1 + self.ch.below(4)] = b""
            elif how == 2:
                line[at:at] = pick(self.ch, (b" ", b"\t", b"\r", b"\\ ", b"  ", b"\\", b"\n"))
            elif how == 3 and line:
                line[min(at, len(line) - 1)] = self.ch.below(256)
            elif how == 4:
                line += b" " + odd_word(self.ch)
            elif how == 5:
                line = bytearray(pick(self.ch, (b" ", b"\t", b"\r", b"\\"))) + line
            else:
                line += self.command_line()  # two commands glued
        return bytes(line)

    def ad_line(self) -> bytes:
        if self.ad_queue:
            return self.ad_queue.pop(0)
        roll = self.ch.below(10)
        if roll < 2:
            return cased(self.ch, "CLASSAD_END")
        if roll < 5 and self.job_ad:
            return pick(self.ch, self.job_ad)
        if roll < 7:
            return pick(self.ch, (b"JobVMMemory", b"VM_WORKING_DIR", b"JobVMType", b"ClusterId",
                                  b"VMPARAM_vm_Disk", b"x")) + b" = " + odd_word(self.ch)
        if roll < 8:
            return pick(self.ch, (b"CLASSAD_END ", b" CLASSAD_END", b"CLASSAD_END\x00", b"QUIT", b"RESULTS",
                                  b"CLASSAD", b"CLASSAD_END\\", b"CLASSAD_\\END"))
        return self.mutated_line() if roll < 9 else odd_word(self.ch)

    def candidate(self) -> bytes:
        if self.state.in_ad:
            return self.ad_line()
        roll = self.ch.below(20)
        if roll < 10:
            return self.command_line()
        if roll < 16:
            return self.mutated_line()
        if roll < 17:
            return cased(self.ch, "CLASSAD")
        if roll < 19:
            return self.ch.blob(64)
        return pick(self.ch, NAMES[:-1]).encode() + b" " + big_word(self.ch)

    def next(self) -> tuple[bytes, list[Optional[bytes]]]:
        """One more line and the frames it completes (0, 1 or more)."""
        while True:
            line = self.candidate() + pick(self.ch, self.TERMINATORS)
            frames = self._advance(line)
            if frames is not None:
                self.lines += 1
                return line, frames

    def closing(self) -> list[tuple[bytes, list[Optional[bytes]]]]:
        """Lines that bring the stream back to a line boundary outside any ad."""
        out = []
        while not self.framer.clean or self.state.in_ad:
            # " x": whatever is buffered, never a one-word command (such as QUIT)
            line = b" x\r\n" if not self.framer.clean else b"CLASSAD_END\r\n"
            frames = self._advance(line)
            assert frames is not None
            out.append((line, frames))
        return out

    def _advance(self, line: bytes) -> Optional[list[Optional[bytes]]]:
        """Feed the models; None (and no change) if the line would QUIT."""
        saved = bytes(self.framer.buf), self.framer.escaped, self.state.in_ad, self.state.async_on
        frames = self.framer.feed(line)
        for frame in frames:
            in_ad = self.state.in_ad
            self.state.expect(frame)
            if not in_ad and self.state.in_ad and not self.ad_queue and self.job_ad and self.ch.below(3) == 0:
                self.ad_queue = self.full_ad()
            found = None if in_ad else command_of(frame)
            if found is not None and found[0] == "CONDOR_VM_START" and self._ad_names_a_vm():
                self.starts += 1  # probably consumes a VM id
            if found is not None and found[0] == "QUIT" and not self.allow_quit:
                # Undo what steers the lines to come (the ad's lines and the
                # START count only feed the VM-id heuristic).
                self.framer.buf[:] = saved[0]
                self.framer.escaped, self.state.in_ad, self.state.async_on = saved[1:]
                self.state.quitting = False
                self.ad_queue = []
                return None
        return frames

    def _ad_names_a_vm(self) -> bool:
        lines = self.state.ad or ()
        return all(any(line.startswith(name) for line in lines) for name in ("VM_WORKING_DIR", "JobVMType"))

    def full_ad(self) -> list[bytes]:
        """A whole job ad, with garbage mixed in and a ClusterId of its own,
        so that some STARTs really boot a VM and VM ids 1, 2, ... exist."""
        lines = []
        for line in self.job_ad:
            lines.append(line)
            if self.ch.below(4) == 0:
                lines.append(odd_word(self.ch) + b" = " + odd_word(self.ch))
        return lines + [b"ClusterId = %d" % (1 + self.ch.below(6))]
