"""`python -m bench.otlp_sink --host H --port P`: a loopback OTLP/HTTP endpoint for the
benchmark's tracing-on gateway. It answers every export 200 with an empty
ExportTraceServiceResponse (an empty protobuf message is zero bytes) without decoding it: the
gateway's cost of tracing is what is measured, not a collector's. `GET /stats` says how many
exports and bytes arrived, so the benchmark can show tracing was really on."""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_lock = threading.Lock()
_stats = {"exports": 0, "bytes": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        size = int(self.headers.get("content-length", "0"))
        self.rfile.read(size)
        with _lock:
            _stats["exports"] += 1
            _stats["bytes"] += size
        self._reply(b"", "application/x-protobuf")

    def do_GET(self) -> None:
        with _lock:
            body = json.dumps(_stats).encode()
        self._reply(body, "application/json")

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp_sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
