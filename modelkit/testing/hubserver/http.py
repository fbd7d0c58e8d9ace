"""The request plumbing of the test Hub: replies, errors, auth, fault injection, routing.

Routes are one table (:data:`modelkit.testing.hubserver.routes.ROUTES`): ``(method, path
regex, function)``; a function takes the request and the regex's groups, and answers through
:meth:`Request.reply` / :meth:`Request.err`.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from modelkit.testing.hubserver.routes import ROUTES

FAULTS = ("500", "429", "drop", "drop-after", "drop-mid")


class Dropped(Exception):
    """The connection was closed on purpose (fault injection)."""


class Sink:
    """Swallows a response (for ``drop-after``)."""

    closed = False

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


class Request(BaseHTTPRequestHandler):
    """One request to the test Hub (``self.server.hub`` is the :class:`HubServer`)."""

    protocol_version = "HTTP/1.1"

    @property
    def hub(self) -> Any:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, *a: Any) -> None:  # quiet
        pass

    def reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        """Answer ``status`` with ``body`` (bytes as is, anything else as JSON)."""
        raw = isinstance(body, bytes)
        data = b"" if body is None else (body if raw else json.dumps(body).encode())
        self.send_response(status)
        if not raw:
            self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def err(self, status: int, msg: str, code: str | None = None) -> None:
        """An error answer the way the Hub words it (``X-Error-Code`` when given)."""
        self.reply(status, {"error": msg}, {"X-Error-Code": code} if code else None)

    def body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def json(self) -> Any:
        return json.loads(self.body() or b"{}")

    def drop(self) -> None:
        """Close the connection now, without an answer."""
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True
        raise Dropped

    def authorised(self) -> bool:
        """True with the server's token (or none required); else answers 401."""
        token = self.hub.token
        if token is None or self.headers.get("Authorization") == f"Bearer {token}":
            return True
        self.err(401, "Invalid credentials in Authorization header")
        return False

    def do_GET(self) -> None:
        with contextlib.suppress(Dropped):
            self.dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def dispatch(self) -> None:
        """Count the request, apply its injected fault (if any), route it."""
        fault = self.hub.count(f"{self.command} {self.path}")
        if fault == "drop-mid":  # half the body arrives, then the line goes dead
            n = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(n // 2)
            self.drop()
        if fault in ("500", "429", "drop"):
            self.body() if self.command in ("POST", "PUT") else None
            if fault == "drop":
                self.drop()
            if fault == "429":
                retry = {"Retry-After": str(self.hub.retry_after)}
                return self.reply(429, {"error": "rate limited"}, retry)
            return self.reply(500, {"error": "injected internal error"})
        if fault == "drop-after":
            self.wfile = Sink()  # handle it fully, answer nothing
            try:
                self.route()
            finally:
                self.drop()
        self.route()

    def route(self) -> None:
        """Call the first route of the table matching the method and path."""
        url = urlparse(self.path)
        path, query = url.path, parse_qs(url.query)
        for method, pattern, fn in ROUTES:
            if method == self.command or (method == "GET" and self.command == "HEAD"):
                m = re.fullmatch(pattern, path)
                if m:
                    return fn(self, *m.groups(), query=query)
        self.err(404, f"no route for {self.command} {path}")
