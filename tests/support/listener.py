"""A loopback HTTP listener that records every connection it accepts: the proof, in the SSRF
tests, that a refused URL never reached a socket (and, as a positive control, that a trusted
name for the same socket does)."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

PDF = b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF\n"


class _Spy(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _SpyServer)
        server.accepted.append(str(self.client_address))
        self.request.recv(65536)
        self.request.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\n"
            + f"Content-Length: {len(PDF)}\r\nConnection: close\r\n\r\n".encode()
            + PDF
        )


class _SpyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], accepted: list[str]) -> None:
        self.accepted = accepted
        super().__init__(address, _Spy)


class _SpyServer6(_SpyServer):
    address_family = socket.AF_INET6


@dataclass
class Listener:
    """HTTP on 127.0.0.1 (and ::1), on its own threads (the in-process test client blocks the
    test's event loop while the app works), answering a tiny PDF and recording every accept."""

    port: int = 0
    accepted: list[str] = field(default_factory=list)
    ipv6: bool = False


@contextmanager
def listening() -> Iterator[Listener]:
    spy = Listener()
    servers = [_SpyServer(("127.0.0.1", 0), spy.accepted)]
    spy.port = servers[0].server_address[1]
    if socket.has_ipv6:
        try:
            servers.append(_SpyServer6(("::1", spy.port), spy.accepted))
            spy.ipv6 = True
        except OSError:
            pass
    threads = [threading.Thread(target=s.serve_forever, args=(0.02,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        yield spy
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
