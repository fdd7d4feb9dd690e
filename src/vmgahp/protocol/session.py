"""The GAHP session: a pure state machine from lines in to actions out.

Theory of operation
-------------------
The daemon feeds every complete input line to :meth:`GahpSession.receive_line`
and every finished VM operation to :meth:`GahpSession.complete`. Both return a
list of actions the I/O shell carries out in order:

* ``Send(text)``  - write ``text`` plus ``\\n`` on stdout;
* ``Dispatch(request)`` - start a VM operation off the command loop;
* ``Quit()`` - destroy every VM, then send ``S`` and exit 0.

The session owns what the C++ gahp keeps in its ``VMGahp`` object: async mode,
the "R already signalled" flag, the FIFO of finished results, the set of
pending request ids, and the job ad being received. It never touches a file
descriptor, a thread or a hypervisor, so every rule of spec sections 2 and 3
is unit-testable line by line.

A RESULTS with nothing to report while requests are in flight is **held**:
its reply goes out when the first of them finishes (after its ``R``, in the
C++ gahp's order), when the peer sends another line, or when the shell calls
:meth:`GahpSession.release` (its time limit). The real starter waits for a result by writing RESULTS, sleeping 1 s,
reading the reply, then sleeping 2 s before it polls again; against the C++
gahp, which runs each command before it reads the next line, its first
RESULTS already carries the result. Answering ``S 0`` at once would cost it up
to 3 s per command; holding the reply makes the result reach it as soon as
the command is done, and never later than the C++ gahp would.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple, Optional, Union

from vmgahp.protocol import commands, wire
from vmgahp.protocol.commands import Kind

# Immutable message types as NamedTuples: dataclasses would cost the banner
# 10 ms of imports.


class Request(NamedTuple):
    """A VM command accepted with ``S`` and waiting to be executed."""

    request_id: int
    command: str  # canonical upper-case name, e.g. "CONDOR_VM_STATUS"
    vm_type: str = ""  # CONDOR_VM_START only, lower-cased
    vm_id: int = 0  # every other VM command; 0 names no VM
    ad_lines: Optional[tuple[str, ...]] = None  # START: the job ad at that moment


class Send(NamedTuple):
    text: str


class Dispatch(NamedTuple):
    request: Request


class Quit(NamedTuple):
    pass


Action = Union[Send, Dispatch, Quit]

_S = Send("S")
_E = Send("E")
MAX_AD_BYTES = 16 << 20  # a real job ad is a few KiB; the starter sends 2 KiB a second


class GahpSession:
    """One starter conversation. Not thread-safe: the daemon serialises calls."""

    def __init__(self, supported_types: tuple[str, ...], version_line: str) -> None:
        self.supported_types = tuple(t.lower() for t in supported_types)
        self.version_line = version_line
        self.async_mode = True  # the C++ gahp starts in async mode
        self._r_signalled = False
        self._results: deque[str] = deque()
        self._pending: set[int] = set()
        self._in_ad = False
        self._ad_lines: list[str] | None = None
        self._ad_bytes = 0
        self.ad_too_big = False  # the last CLASSAD block passed MAX_AD_BYTES
        self.quitting = False
        self._held = False  # a RESULTS waits for its reply (see the module doc)

    # ------------------------------------------------------------------ input
    def receive_line(self, line: str | None) -> list[Action]:
        """``None`` is a line too long to keep (see ``wire.LineFramer``).
        A held RESULTS is answered first: the peer has not waited for it."""
        if self.quitting:
            return []
        if self._held:
            return self.release() + self._receive(line)
        return self._receive(line)

    def _receive(self, line: str | None) -> list[Action]:
        if line is None:
            # Inside an ad it would be one attribute the gahp cannot hold:
            # dropped like any line that does not parse. Outside, an E.
            return [] if self._in_ad else [_E]
        if self._in_ad:
            return self._ad_line(line)
        words = wire.split_words(line)
        spec = commands.lookup(words[0])
        if spec is None or len(words) != spec.words:
            return [_E]
        if spec.kind is Kind.VM:
            return self._vm_command(spec, words)
        return self._local_command(spec.name)

    def _ad_line(self, line: str) -> list[Action]:
        # Only the exact, whole line CLASSAD_END leaves ad mode; anything
        # else, commands included, is an attribute line with no reply (Q5).
        if line.isascii() and line.upper() == "CLASSAD_END":
            self._in_ad = False
            return [_S]
        assert self._ad_lines is not None
        self._ad_bytes += len(line) + 1
        if self._ad_bytes > MAX_AD_BYTES:
            # Memory stays bounded; the ad is unusable (START: NO_JOBCLASSAD_INFO).
            self.ad_too_big = True
            self._ad_lines.clear()
            return []
        self._ad_lines.append(line)
        return []

    def _vm_command(self, spec: commands.CommandSpec, words: list[str]) -> list[Action]:
        request_id = wire.parse_request_id(words[1])
        if request_id is None or request_id in self._pending:
            return [_E]
        argument = words[2]
        if spec.argument == "vmtype":
            vm_type = argument.lower()
            # ASCII only, as strcasecmp: str.lower() folds the Kelvin sign to 'k'.
            if not argument.isascii() or vm_type not in self.supported_types:
                return [_E]
            ad = tuple(self._ad_lines) if self._ad_lines is not None and not self.ad_too_big else None
            request = Request(request_id, spec.name, vm_type=vm_type, ad_lines=ad)
        else:
            vm_id = wire.parse_vm_id(argument)
            if vm_id is None:
                return [_E]
            request = Request(request_id, spec.name, vm_id=vm_id)
        self._pending.add(request_id)
        return [_S, Dispatch(request)]

    def _local_command(self, name: str) -> list[Action]:
        if name == "RESULTS":
            if not self._results and self._pending:
                self._held = True
                return []
            return self._results_reply()
        if name == "COMMANDS":
            return [Send(commands.COMMANDS_REPLY)]
        if name == "SUPPORT_VMS":
            return [Send(" ".join(("S", *self.supported_types)))]
        if name == "VERSION":
            return [Send("S " + self.version_line)]
        if name == "ASYNC_MODE_ON":
            self.async_mode = True
            self._r_signalled = False
            return [_S]
        if name == "ASYNC_MODE_OFF":
            self.async_mode = False
            return [_S]
        if name == "CLASSAD":
            self._in_ad = True
            self._ad_lines = []
            self._ad_bytes = 0
            self.ad_too_big = False
            return [_S]
        if name == "CLASSAD_END":
            # Outside ad mode this deletes the stored ad (spec 3.3).
            self._ad_lines = None
            return [_S]
        if name == "QUIT":
            # Results not yet collected are dropped; the shell destroys the
            # VMs before it sends the S (spec 1.9).
            self.quitting = True
            self._results.clear()
            self._pending.clear()
            return [Quit()]
        raise AssertionError(f"unhandled local command {name}")

    # ---------------------------------------------------------------- results
    def complete(self, request_id: int, ok: bool, text: str) -> list[Action]:
        """Queue the result of a finished request; answer a held RESULTS with
        it, or maybe announce it with R."""
        if self.quitting or request_id not in self._pending:
            return []
        self._pending.discard(request_id)
        self._results.append(wire.result_line(request_id, ok, text))
        if self._held:
            # The C++ gahp's order: R when the command is done, then the reply
            # to the RESULTS it read after it (the starter drops the R).
            notify = [Send("R")] if self.async_mode and not self._r_signalled else []
            return notify + self._results_reply()
        if self.async_mode and not self._r_signalled:
            self._r_signalled = True
            return [Send("R")]
        return []

    def release(self) -> list[Action]:
        """The reply of a held RESULTS, now, with whatever is there."""
        return self._results_reply() if self._held else []

    def _results_reply(self) -> list[Action]:
        lines = [f"S {len(self._results)}", *self._results]
        self._results.clear()
        self._r_signalled = False
        self._held = False
        return [Send(text) for text in lines]

    @property
    def holding(self) -> bool:
        """A RESULTS is waiting for its reply."""
        return self._held

    @property
    def receiving_ad(self) -> bool:
        """Inside a CLASSAD block: a START is usually about to follow."""
        return self._in_ad

    @property
    def pending_ids(self) -> frozenset[int]:
        return frozenset(self._pending)
