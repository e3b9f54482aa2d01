"""Small local HTTP servers that push back, for tests of ``auto``'s concurrency limit.

Run as a script (each test starts one in a subprocess, so that it has its own GIL, as a real
server does, and stops it)::

    python tests/http_servers.py workers K DELAY   # K handler threads, a listen backlog of 5
    python tests/http_servers.py limit N DELAY     # answers 429 above N requests at once

It prints its port on the first line. Every request but ``/stats`` waits ``DELAY`` seconds
and answers ``ok``; ``/stats`` answers JSON: requests served, rejected (429), and the most
handled at once.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BACKLOG = 5  # http.server's default listen backlog


class _Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = self.peak = self.served = self.rejected = 0

    def enter(self, limit: int | None) -> bool:
        with self.lock:
            if limit is not None and self.active >= limit:
                self.rejected += 1
                return False
            self.active += 1
            self.peak = max(self.peak, self.active)
            return True

    def leave(self) -> None:
        with self.lock:
            self.active -= 1
            self.served += 1

    def as_json(self) -> bytes:
        with self.lock:
            return json.dumps({"served": self.served, "rejected": self.rejected,
                               "peak": self.peak}).encode()


def _answer(conn: socket.socket, status: str, body: bytes) -> None:
    conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + body)


def serve_workers(workers: int, delay: float) -> None:
    """K threads accept from one socket with a backlog of 5, as a fixed-size server does:
    past K requests at once, connections wait in the backlog; past that, the kernel drops
    them (the client's connect stalls for a second, then retries)."""
    counts = _Counts()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(BACKLOG)
    print(listener.getsockname()[1], flush=True)

    def work() -> None:
        while True:
            conn, _ = listener.accept()
            with conn:
                request = conn.recv(65536)
                if request.startswith(b"GET /stats"):
                    _answer(conn, "200 OK", counts.as_json())
                    continue
                counts.enter(None)
                time.sleep(delay)
                counts.leave()
                _answer(conn, "200 OK", b"ok")

    for _ in range(workers):
        threading.Thread(target=work, daemon=True).start()
    sys.stdin.read()  # until the test closes our stdin


def serve_limit(limit: int, delay: float) -> None:
    """A thread per request (a big backlog), answering 429 above ``limit`` at once."""
    counts = _Counts()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server calls
            if self.path == "/stats":
                self._send(200, counts.as_json())
            elif not counts.enter(limit):
                self._send(429, b"too many requests")
            else:
                time.sleep(delay)
                counts.leave()
                self._send(200, b"ok")

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 256

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()


@contextlib.contextmanager
def running(kind: str, size: int, delay: float) -> Iterator[str]:
    """Start a server in a subprocess; its base URL; stopped (and reaped) on exit."""
    child = subprocess.Popen([sys.executable, str(Path(__file__)), kind, str(size), str(delay)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        child.kill()
        child.wait(10)
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


def stats(url: str) -> dict[str, int]:
    from urllib.request import urlopen

    with urlopen(f"{url}/stats", timeout=10) as answer:
        return dict(json.loads(answer.read()))


if __name__ == "__main__":
    {"workers": serve_workers, "limit": serve_limit}[sys.argv[1]](int(sys.argv[2]),
                                                                  float(sys.argv[3]))
