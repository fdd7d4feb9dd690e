"""Deadlines, TLS trust and the HTTPS connections every request goes through.

* ``Deadline``: the caller's time budget. Each request runs with a socket timeout of
  ``min(io_timeout, time left)`` (``Deadline.bound``), read from a thread-local by
  ``PinnedHTTPSConnection`` when it connects and before every request - so pyVmomi's
  pooled connections honour the deadline of whichever call is using them.
* ``Trust``: verification is always on. A CA file, the system CAs, or a pinned SHA-256
  thumbprint, which is checked on *every* connection (pyVmomi's own ``thumbprint``
  check runs only after a failed verification and then turns verification off on the
  shared SSL context, so later connections would go unchecked).
* ``translate_transport``: socket/TLS/HTTP errors as Unreachable, TimedOut or
  UntrustedServer.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import re
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from vmgahp.drivers.vmware.errors import TimedOut, Unreachable, UntrustedServer, VSphereError

IO_TIMEOUT = 60.0  # cap on one socket wait, whatever the deadline
_current = threading.local()


class Deadline:
    """A point in time (monotonic) by which an operation must be over."""

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"a deadline needs a positive time, not {seconds!r}")
        self.seconds = float(seconds)
        self._end = time.monotonic() + self.seconds

    def left(self) -> float:
        return self._end - time.monotonic()

    def check(self, what: str) -> float:
        """Time left; TimedOut if none."""
        left = self.left()
        if left <= 0:
            raise TimedOut(f"{what}: deadline of {self.seconds:g} s passed")
        return left

    @contextmanager
    def bound(self, what: str, cap: float = IO_TIMEOUT) -> Iterator[float]:
        """Run the block's requests with socket timeout min(cap, time left)."""
        timeout = min(cap, self.check(what))
        previous = getattr(_current, "timeout", None)
        _current.timeout = _current.last = timeout  # "last": for the error message, after the block
        try:
            yield timeout
        finally:
            _current.timeout = previous


def _timeout(default: float | None) -> float | None:
    value = getattr(_current, "timeout", None)
    return value if value is not None else default


def normalize_thumbprint(thumbprint: str) -> str:
    """'AA:BB:..' or 'aabb..' -> 64 lower-case hex digits (SHA-256 only)."""
    digits = re.sub(r"[\s:]", "", thumbprint).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digits):
        raise ValueError("a certificate thumbprint must be a SHA-256 digest (64 hex digits, colons optional)")
    return digits


class PinMismatch(ssl.SSLError):
    """The server's certificate is not the pinned one."""


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPSConnection with deadline-bound socket timeouts and an optional pin."""

    pin: str | None = None  # set on subclasses made by connection_class()

    def connect(self) -> None:
        self.timeout = _timeout(self.timeout)
        super().connect()
        if self.pin is not None:
            der = self.sock.getpeercert(binary_form=True) or b""
            if not hmac.compare_digest(hashlib.sha256(der).hexdigest(), self.pin):
                self.close()
                raise PinMismatch("the server's certificate does not match the pinned SHA-256 thumbprint")

    def request(self, *args: object, **kwargs: object) -> None:
        timeout = _timeout(None)
        if timeout is not None:
            self.timeout = timeout
            if self.sock is not None:
                self.sock.settimeout(timeout)
        super().request(*args, **kwargs)  # type: ignore[arg-type]


def connection_class(pin: str | None) -> type[PinnedHTTPSConnection]:
    return type("PinnedHTTPSConnection", (PinnedHTTPSConnection,), {"pin": pin})


@dataclass(frozen=True)
class Trust:
    """How the server's certificate is checked. Neither field: the system CAs."""

    ca_file: str | None = None
    thumbprint: str | None = None  # normalized by __post_init__
    verify: bool = True  # False only by the admin's VMWARE_TLS_VERIFY = false: no check at all

    def __post_init__(self) -> None:
        if self.thumbprint is not None:
            object.__setattr__(self, "thumbprint", normalize_thumbprint(self.thumbprint))

    def ssl_context(self) -> ssl.SSLContext:
        if not self.verify or (self.thumbprint is not None and self.ca_file is None):
            # The pin replaces chain and name checks; PinnedHTTPSConnection checks it.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            try:
                context = ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise VSphereError(f"cannot load CA file {self.ca_file}: {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def describe(self) -> str:
        if not self.verify:
            return "nothing (VMWARE_TLS_VERIFY = false)"
        if self.thumbprint:
            return "pinned thumbprint" + (f" and CA file {self.ca_file}" if self.ca_file else "")
        return f"CA file {self.ca_file}" if self.ca_file else "the system CAs"


def translate_transport(exc: BaseException, what: str, trust: Trust | None = None) -> VSphereError | None:
    """A VSphereError for a socket, TLS or HTTP-protocol error; None for anything else."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        timeout = getattr(_current, "last", None)
        after = f" within {timeout:.1f} s" if timeout is not None else ""
        return TimedOut(f"{what}: no answer{after}")
    if isinstance(exc, (ssl.SSLCertVerificationError, PinMismatch)):
        how = f" (checked against {trust.describe()})" if trust else ""
        reason = getattr(exc, "verify_message", None) or str(exc)
        return UntrustedServer(f"{what}: server certificate not trusted{how}: {reason}")
    if isinstance(exc, ssl.SSLError):
        return Unreachable(f"{what}: TLS failed: {exc}")
    if isinstance(exc, ConnectionRefusedError):
        return Unreachable(f"{what}: connection refused")
    if isinstance(exc, (OSError, http.client.HTTPException)):
        return Unreachable(f"{what}: connection lost ({type(exc).__name__}: {exc})")
    return None
