"""A local TCP server that counts connections: proof that something did not call out."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator


class Listener:
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.socket.settimeout(0.1)
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                client, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            client.close()

    def stop(self) -> None:
        self.running = False
        self.thread.join()
        self.socket.close()


def listening() -> Iterator[Listener]:
    """The body of a fixture: a listener, stopped afterwards."""
    server = Listener()
    yield server
    server.stop()
