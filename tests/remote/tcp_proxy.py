"""A tiny TCP proxy in front of the S3 server that a test can turn bad at any moment: `hang`
(connections stay open, nothing comes back: a stalled server), `reset` (every connection is
closed at once: a server that went away), `slow` (every piece of an answer is held back
`slow_delay` seconds: a server that answers, just before the client's read timeout) or `trickle`
(answers come one byte every `slow_delay` seconds: no read ever times out, no answer ever ends).
A task command can flip it by creating a flag file.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class FlakyProxy:
    def __init__(self, upstream_port: int, flag_dir: Path, slow_delay: float = 0.0):
        self.upstream_port = upstream_port
        self.slow_delay = slow_delay
        self.flag_dir = flag_dir
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def mode(self) -> str:
        for mode in ("hang", "reset", "slow", "trickle"):
            if (self.flag_dir / mode).exists():
                return mode
        return "pass"

    def set_mode(self, mode: str) -> None:
        for name in ("hang", "reset", "slow", "trickle"):
            (self.flag_dir / name).unlink(missing_ok=True)
        if mode != "pass":
            (self.flag_dir / mode).touch()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._track(client)
            if self.mode == "reset":
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.mode == "hang":
            self._drain(client)
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            client.close()
            return
        self._track(upstream)
        threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()
        self._pump(client, upstream)

    def _drain(self, sock: socket.socket) -> None:
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass
        finally:
            sock.close()

    def _pump(self, source: socket.socket, destination: socket.socket, answers: bool = False) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                mode = self.mode
                if mode == "reset":
                    break
                if mode == "hang":
                    continue          # swallow: the other side waits for an answer that never comes
                if mode == "slow" and answers:
                    time.sleep(self.slow_delay)
                if mode == "trickle" and answers:
                    for index in range(len(data)):
                        time.sleep(self.slow_delay)
                        destination.sendall(data[index:index + 1])
                    continue
                destination.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, destination):
                try:
                    sock.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._stopped.set()
        self.listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.close()
            except OSError:
                pass
