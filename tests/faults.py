"""Fault injection at the socket level, in front of a real libvirtd.

``FreezableProxy`` listens on a unix socket and forwards every connection to
libvirtd's socket. ``freeze()`` makes it stop forwarding in both directions
(the peer sees a daemon that accepted the call and never answers - the
"hung libvirtd" of HTCONDOR-2644); ``thaw()`` delivers what was held back.
``silent_socket`` is a listener that accepts and never answers at all.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from pathlib import Path
from typing import Iterator


class FreezableProxy:
    def __init__(self, listen_path: Path, target_path: str) -> None:
        self.listen_path = listen_path
        self.target_path = target_path
        self._running = threading.Event()
        self._running.set()  # set = forwarding
        self._stop = False
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(listen_path))
        self._server.listen(16)
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.listen_path}"

    def freeze(self) -> None:
        self._running.clear()

    def thaw(self) -> None:
        self._running.set()

    def _accept_loop(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target_path)
            thread = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while not self._stop:
                self._running.wait()
                ready, _, _ = select.select(list(peers), [], [], 0.1)
                for sock in ready:
                    if not self._running.is_set():
                        break
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self._stop = True
        self._running.set()
        self._server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.listen_path)


@contextlib.contextmanager
def silent_socket(path: Path) -> Iterator[str]:
    """A unix socket that accepts connections and never says a word."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"qemu+unix:///system?socket={path}"
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
