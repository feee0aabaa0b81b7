"""A real `verge web` process on 127.0.0.1 (a free port), with users made by `verge users`,
for the tests that must see what a client on the network sees: parallel requests served by the
real server, its headers, a second client address."""
from __future__ import annotations

import http.client
import re
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from tests import services

PASSWORD = "correct horse battery"


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: str

    def cookies(self) -> dict:
        out = {}
        for header in self.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            out[name] = rest.split(";", 1)[0]
        return out


@dataclass
class Client:
    """A tiny cookie-keeping HTTP client; ``source`` picks the client address (any of
    127.0.0.0/8 reaches a server on 127.0.0.1)."""
    port: int
    source: str = "127.0.0.1"
    cookies: dict = field(default_factory=dict)

    def request(self, method: str, path: str, form: dict | None = None, headers: dict | None = None,
                body: bytes | None = None) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60,
                                          source_address=(self.source, 0))
        hdrs = dict(headers or {})
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            out = Response(resp.status, resp.headers, resp.read().decode("utf-8", "replace"))
        finally:
            conn.close()
        self.cookies.update(out.cookies())
        return out

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def csrf(self, path: str = "/login") -> str:
        html = self.get(path).body
        found = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
        assert found, f"no CSRF token on {path}: {html[:300]}"
        return found.group(1)

    def login(self, name: str, password: str = PASSWORD) -> Response:
        return self.request("POST", "/login", form={"name": name, "password": password,
                                                    "csrf_token": self.csrf()})


class LiveWeb:
    """`verge web` on a free port of 127.0.0.1 (``env`` over this process's environment), its
    database migrated by `verge db upgrade`; ``start()`` returns once /healthz answers 200."""

    def __init__(self, env: dict, log: Path):
        self.port = services.free_port()
        self.env = services.child_env({**env, "VERGE_WEB_PORT": str(self.port)})
        self.log = log
        self.server: services.Service | None = None
        self.verge("db", "upgrade")

    def verge(self, *args: str, input: str | None = None) -> str:
        return services.verge(self.env, *args, input=input, timeout=120).stdout

    def add_user(self, name: str, role: str = "reviewer", password: str = PASSWORD) -> None:
        self.verge("users", "add", name, "--role", role, "--password-stdin", input=password + "\n")

    def token(self, name: str) -> str:
        return self.verge("users", "token", name).strip().splitlines()[0]

    def start(self) -> "LiveWeb":
        self.server = services.Service([sys.executable, "-m", "verge", "web"], self.log, self.env)
        self.server.what = "verge web"
        self.server.wait_ready(self._healthy, 60)
        return self

    def _healthy(self) -> bool:
        try:
            return Client(self.port).get("/healthz").status == 200
        except OSError:
            return False

    def client(self, source: str = "127.0.0.1") -> Client:
        return Client(self.port, source)

    def stop(self) -> None:
        if self.server:
            self.server.stop(timeout=20)
