"""A starter and a gahp in one process, for tests: no pipes, no threads.

:class:`GahpPair` wires a :class:`~vmgahp.protocol.client.GahpClient` to a
:class:`~vmgahp.protocol.session.GahpSession` the way h11's tests pair a
client and a server connection: the client's bytes go through the daemon's
``LineFramer`` into the session, the session's ``Send`` lines come back as
bytes (``\\n``-terminated, as the daemon writes them) into the client, and the
client's events are returned. The pair stands in for the daemon's runtime:
dispatched requests wait in :attr:`GahpPair.dispatched` until the test
finishes them with :meth:`GahpPair.complete`; ``QUIT`` is answered ``S`` and
the stream closes, as the daemon does once its VMs are gone.
"""

from __future__ import annotations

from vmgahp.protocol.client import Event, GahpClient, Reply, Results
from vmgahp.protocol.session import Action, Dispatch, GahpSession, Quit, Request, Send
from vmgahp.protocol.wire import LineFramer

BANNER = "$VMGahpVersion 0.0.1 Dec 1 2026 vmgahp-test $"


class GahpPair:
    def __init__(self, supported_types: tuple[str, ...] = ("xen", "kvm"), banner: str = BANNER) -> None:
        self.client = GahpClient()
        self.session = GahpSession(supported_types, banner)
        self.framer = LineFramer()
        self.dispatched: dict[int, Request] = {}  # accepted, not yet completed
        self.wire: list[tuple[str, bytes]] = []  # (">" client to gahp | "<" gahp to client, bytes)
        self.closed = False  # QUIT done: the gahp has exited
        self._eof_sent = False
        self.events: list[Event] = []  # every event the client produced, in order
        self._deliver([banner])  # the daemon writes the banner first

    # ------------------------------------------------------ the starter's side
    def send(self, text: str) -> list[Event]:
        """One line from the client; the events it gets back."""
        return self.transmit(self.client.send_line(text))

    def request(self, command: str, argument: str) -> tuple[int, list[Event]]:
        request_id, data = self.client.request(command, argument)
        return request_id, self.transmit(data)

    def transmit(self, data: bytes) -> list[Event]:
        """Raw bytes to the gahp (they need not be whole lines, nor the client's)."""
        self.wire.append((">", data))
        lines: list[str] = []
        for line in self.framer.feed(data):
            lines += self._carry_out(self.session.receive_line(line))
        return self._deliver(lines)

    def command(self, text: str) -> Reply:
        """A command and its immediate reply (R notifications on the way are dropped)."""
        replies = [e for e in self.send(text) if isinstance(e, Reply)]
        assert len(replies) == 1, replies
        return replies[0]

    def poll(self) -> Results:
        """RESULTS and its batch."""
        batches = [e for e in self.send("RESULTS") if isinstance(e, Results)]
        assert len(batches) == 1, batches
        return batches[0]

    def send_ad(self, lines: list[str]) -> None:
        assert self.command("CLASSAD").ok
        for line in lines:
            assert self.send(line) == [], line  # no reply inside the block
        assert self.command("CLASSAD_END").ok

    def handshake(self) -> tuple[Reply, Reply, Reply]:
        """What the starter sends after the banner."""
        return self.command("COMMANDS"), self.command("SUPPORT_VMS"), self.command("ASYNC_MODE_ON")

    # --------------------------------------------------------- the gahp's side
    def complete(self, request_id: int, ok: bool = True, text: str = "") -> list[Event]:
        """The runtime finishing a dispatched request."""
        del self.dispatched[request_id]
        return self._deliver(self._carry_out(self.session.complete(request_id, ok, text)))

    def _carry_out(self, actions: list[Action]) -> list[str]:
        out: list[str] = []
        for action in actions:
            if isinstance(action, Send):
                out.append(action.text)
            elif isinstance(action, Dispatch):
                self.dispatched[action.request.request_id] = action.request
            elif isinstance(action, Quit):
                self.dispatched.clear()  # the VMs are destroyed, then S and exit
                out.append("S")
                self.closed = True
        return out

    def _deliver(self, lines: list[str]) -> list[Event]:
        data = b"".join((text + "\n").encode("utf-8", "surrogateescape") for text in lines)
        events: list[Event] = []
        if data:
            self.wire.append(("<", data))
            events = self.client.receive(data)
        if self.closed and not self._eof_sent:
            self._eof_sent = True
            events += self.client.receive(b"")
        self.events += events
        return events
