"""A fault-injecting HTTP proxy in front of an S3 endpoint (the moto server), for storage reliability tests.

    with FaultyS3Proxy(upstream) as proxy:
        proxy.fail(3)                          # the next 3 requests get 503 SlowDown
        proxy.fail(1, "stall", stall_s=2.0)    # the next request hangs for 2 s, then the connection is closed
        proxy.fail(None, "403", method="PUT")  # every PUT is refused with 403 AccessDenied
        Store("s3://bucket/x", StorageOptions(endpoint_url=proxy.url))
        proxy.requests                         # [Request(method, path, fault), ...] in arrival order

Rules are matched in the order they were added; the first rule that matches a request and still has a budget
left (``times``; None = forever) is applied to it, the others are left alone. A request no rule takes is
forwarded to the upstream unchanged.
"""
from __future__ import annotations

import http.client
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_ERRORS = {  # fault -> (HTTP status, S3 error code, message)
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "429": (429, "TooManyRequests", "Too many requests."),
    "403": (403, "AccessDenied", "Access Denied"),
    "403-key": (403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."),
    "404-bucket": (404, "NoSuchBucket", "The specified bucket does not exist"),
}
FAULTS = (*_ERRORS, "stall", "reset")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade"}


@dataclass
class Rule:
    fault: str
    times: int | None  # None: every matching request
    method: str | None = None
    path: str | None = None  # regular expression searched in the request path (with its query string)
    stall_s: float = 5.0

    def matches(self, method: str, path: str) -> bool:
        return ((self.times is None or self.times > 0) and (self.method is None or self.method == method)
                and (self.path is None or re.search(self.path, path) is not None))


@dataclass
class Request:
    method: str
    path: str
    fault: str | None  # None: forwarded
    authorization: str = ""  # the Authorization header (SigV4: names the access key id, never the secret)


class FaultyS3Proxy:
    def __init__(self, upstream: str):
        u = urlsplit(upstream)
        self.upstream_host, self.upstream_port = u.hostname, u.port
        self.rules: list[Rule] = []
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                proxy._serve(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="faulty-s3", daemon=True)

    # -- control
    def start(self) -> "FaultyS3Proxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes stalled handlers
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FaultyS3Proxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def fail(self, times: int | None, fault: str = "503", *, method: str | None = None, path: str | None = None,
             stall_s: float = 5.0) -> "FaultyS3Proxy":
        """Apply ``fault`` to the next ``times`` matching requests (None: all of them)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
        with self._lock:
            self.rules.append(Rule(fault, times, method, path, stall_s))
        return self

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()

    def faults(self, fault: str | None = None) -> list[Request]:
        """The requests a fault was applied to (of one kind, or any)."""
        with self._lock:
            return [r for r in self.requests if r.fault is not None and (fault is None or r.fault == fault)]

    # -- serving
    def _pick(self, method: str, path: str, authorization: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    if rule.times is not None:
                        rule.times -= 1
                    self.requests.append(Request(method, path, rule.fault, authorization))
                    return rule
            self.requests.append(Request(method, path, None, authorization))
            return None

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        body = self._read_body(h)
        rule = self._pick(h.command, h.path, h.headers.get("Authorization", ""))
        if rule is None:
            return self._forward(h, body)
        if rule.fault == "stall":  # say nothing for longer than the client waits, then hang up
            self._stop.wait(rule.stall_s)
            h.close_connection = True
            return
        if rule.fault == "reset":  # hang up without a response
            h.close_connection = True
            return
        status, code, message = _ERRORS[rule.fault]
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
               f"<RequestId>faulty-{time.monotonic_ns()}</RequestId></Error>").encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/xml")
        h.send_header("Content-Length", "0" if h.command == "HEAD" else str(len(xml)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(xml)

    @staticmethod
    def _read_body(h: BaseHTTPRequestHandler) -> bytes:
        if "chunked" in h.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return bytes(out)
                out += h.rfile.read(size)
                h.rfile.readline()
        n = int(h.headers.get("Content-Length") or 0)
        return h.rfile.read(n) if n else b""

    def _forward(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body or h.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            conn.request(h.command, h.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            h.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() in _HOP_BY_HOP or k.lower() == "content-length":
                    continue
                h.send_header(k, v)
            length = resp.getheader("Content-Length") if h.command == "HEAD" else None
            h.send_header("Content-Length", length if length is not None else str(len(data)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(data)
        finally:
            conn.close()
