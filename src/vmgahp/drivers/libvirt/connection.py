"""One shared, lazily opened libvirt connection per hypervisor URI.

libvirt connections are thread-safe, so every worker thread uses the same
``virConnect``; only opening and reopening it is serialised by a lock. A
connection is reopened when it reports itself dead (``isAlive()`` false or
failing) or when a call fails with an error that means the transport broke
(the daemon restarted, the socket closed). Idempotent calls are retried once
on a fresh connection; calls that change state are not, because the first
attempt may have reached the daemon before the transport broke.

libvirt prints every error on stderr by default; :func:`install_error_handler`
replaces that with a debug log line, since the caller logs what matters.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

import libvirt

from vmgahp import log
from vmgahp.drivers.base import HostError
from vmgahp.drivers.libvirt.faults import error_code, error_message, is_connection_error, readable

T = TypeVar("T")

_handler_lock = threading.Lock()
_handler_installed = False


def _log_libvirt_error(_ctx: object, err: tuple) -> None:
    # err = (code, domain, message, level, str1, str2, str3, int1, int2)
    try:
        code, domain, message = err[0], err[1], err[2]
    except (TypeError, IndexError):
        code, domain, message = None, None, str(err)
    log.get().debug("libvirt_error", code=code, domain=domain, detail=message)


def install_error_handler() -> None:
    """Stop libvirt printing errors on stderr (once per process)."""
    global _handler_installed
    with _handler_lock:
        if not _handler_installed:
            libvirt.registerErrorHandler(_log_libvirt_error, None)
            _handler_installed = True


class LibvirtConnection:
    """A lazily opened, self-healing connection to one libvirt URI."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._lock = threading.Lock()
        self._conn: libvirt.virConnect | None = None

    def get(self) -> libvirt.virConnect:
        """The live connection, opened or reopened as needed.

        Raises HostError when the hypervisor cannot be reached.
        """
        with self._lock:
            if self._conn is not None and not self._alive(self._conn):
                log.get().warning("libvirt_reconnect", uri=self.uri, detail="connection is dead")
                self._drop_locked()
            if self._conn is None:
                self._conn = self._open()
            return self._conn

    def call(self, fn: Callable[[libvirt.virConnect], T], retry: bool = False) -> T:
        """Run ``fn(conn)``; on a dead transport drop the connection and,
        if ``retry``, run it once more on a new one."""
        conn = self.get()
        try:
            return readable(lambda: fn(conn))
        except libvirt.libvirtError as exc:
            if not is_connection_error(exc):
                raise
            self.invalidate(conn, error_message(exc))
            if not retry:
                raise
        again = self.get()
        return readable(lambda: fn(again))

    def invalidate(self, conn: libvirt.virConnect | None = None, reason: str = "") -> None:
        """Forget the connection (only if it is still ``conn``) so the next call reopens."""
        with self._lock:
            if self._conn is not None and (conn is None or conn is self._conn):
                log.get().warning("libvirt_connection_lost", uri=self.uri, detail=reason)
                self._drop_locked()

    def close(self) -> None:
        """Close the connection; only when no other call is in flight."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass  # already broken: nothing left to release

    def _open(self) -> libvirt.virConnect:
        install_error_handler()
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise HostError(f"cannot connect to {self.uri}: {error_message(exc)}", error_code(exc)) from exc
        if conn is None:  # old bindings returned None instead of raising
            raise HostError(f"cannot connect to {self.uri}")
        log.get().info("libvirt_connected", uri=self.uri)
        return conn

    @staticmethod
    def _alive(conn: libvirt.virConnect) -> bool:
        try:
            return conn.isAlive() == 1
        except libvirt.libvirtError:
            return False

    def _drop_locked(self) -> None:
        # Not closed explicitly: another thread may still be inside a call on
        # it, and virConnectClose would free it under that call. The bindings
        # close it when the last Python reference goes.
        self._conn = None
