"""A stand-in for the Quix Portal API, enough for quixstreams' Quix Cloud mode.

quixstreams (3.28.1, ``platforms/quix/api.py`` and ``config.py``) talks to the Portal with
``Authorization: Bearer <Quix__Sdk__Token>`` and ``X-Version: 2.0``, and for an
``Application()`` plus ``app.topic(name)`` it calls:

- ``GET /workspaces/{ws}/broker/librdkafka``: the librdkafka connection dict, used as is
  (``ConnectionConfig.from_librdkafka_dict``; an ``ssl.ca.cert`` key would be base64-decoded);
- ``GET /{ws}/topics/{name}``: the topic, or 404 when it does not exist yet;
- ``POST /{ws}/topics`` with ``{"name", "configuration": {...}}``: create it;
- ``GET /{ws}/topics``: polled (after a 1 s sleep each round) until the topic's ``status`` is
  ``"Ready"``; the topic's ``id`` (``{ws}-{name}``) is the real Kafka topic name.

It can also call ``GET /workspaces/{ws}`` and ``GET /workspaces`` (only when no workspace id is
known) and ``GET /workspaces/{ws}/certificates``; those are served too, so that a change in
quixstreams shows up as a recorded request rather than as a 404 that hides it.

quixstreams never creates a Quix topic on the broker itself, so this stand-in creates
``{ws}-{name}`` on the real (embedded) broker before it reports the topic ``Ready``.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from embedded_broker import create_topic

#: Kafka topic configuration the Portal reports for a topic created with defaults.
DEFAULT_PARTITIONS = 1
DEFAULT_RETENTION_MINUTES = 10080
DEFAULT_RETENTION_BYTES = 52428800


@dataclass(frozen=True)
class Served:
    """One request the stand-in answered."""

    method: str
    path: str
    status: int
    authorization: str | None
    x_version: str | None


@dataclass
class _Topic:
    name: str
    id: str
    partitions: int
    status: str = "Creating"

    def as_json(self, workspace_id: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "workspaceId": workspace_id,
            "status": self.status,
            "lastError": None,
            "configuration": {
                "partitions": self.partitions,
                "replicationFactor": 1,
                "retentionInMinutes": DEFAULT_RETENTION_MINUTES,
                "retentionInBytes": DEFAULT_RETENTION_BYTES,
                "cleanupPolicy": "Delete",
            },
        }


@dataclass
class QuixPortal:
    """One workspace whose broker is ``broker_address`` (PLAINTEXT); serves on loopback.

    Use as a context manager; ``url`` is the value for ``Quix__Portal__Api``.
    """

    broker_address: str
    token: str
    workspace_id: str = "ws1"
    served: list[Served] = field(default_factory=list)
    _topics: dict[str, _Topic] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the stand-in is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def requests(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request served, in order."""
        with self._lock:
            return [(s.method, s.path) for s in self.served]

    def __enter__(self) -> QuixPortal:
        handler = type("Handler", (_Handler,), {"portal": self})
        # Port 0: the kernel picks a free port, so there is no race with other tests.
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    # -- what the endpoints do ------------------------------------------------------------

    def _workspace(self) -> dict[str, Any]:
        return {
            "workspaceId": self.workspace_id,
            "name": self.workspace_id,
            "status": "Ready",
            "brokerType": "SharedKafka",
            "brokerSettings": {"brokerType": "SharedKafka", "syncTopics": False},
        }

    def _librdkafka(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.broker_address, "security.protocol": "PLAINTEXT"}

    def _get_topic(self, name: str) -> tuple[int, Any]:
        with self._lock:
            topic = self._topics.get(name) or next(
                (t for t in self._topics.values() if t.id == name), None
            )
            if topic is None:
                return 404, {"message": f"Topic '{name}' not found"}
            return 200, topic.as_json(self.workspace_id)

    def _list_topics(self) -> tuple[int, Any]:
        with self._lock:
            return 200, [t.as_json(self.workspace_id) for t in self._topics.values()]

    def _create_topic(self, body: dict[str, Any]) -> tuple[int, Any]:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            return 400, {"message": "a topic needs a name"}
        partitions = (body.get("configuration") or {}).get("partitions") or DEFAULT_PARTITIONS
        with self._lock:
            if name in self._topics:
                # The text quixstreams looks for to treat a creation race as success.
                return 400, {"message": f"Topic with name similar to '{name}' already exists."}
            topic = _Topic(name=name, id=f"{self.workspace_id}-{name}", partitions=partitions)
            self._topics[name] = topic
            answer = topic.as_json(self.workspace_id)  # "Creating", as the real Portal says
        # As Quix Cloud does behind the Portal; an existing one is fine (the embedded broker
        # lives for the whole test session, and a test may reuse a topic name).
        create_topic(self.broker_address, topic.id, partitions, exist_ok=True)
        with self._lock:
            topic.status = "Ready"
        return 200, answer

    def route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        ws = re.escape(self.workspace_id)
        if method == "GET":
            if path == "/workspaces":
                return 200, [self._workspace()]
            if path == f"/workspaces/{self.workspace_id}":
                return 200, self._workspace()
            if path == f"/workspaces/{self.workspace_id}/broker/librdkafka":
                return 200, self._librdkafka()
            if path == f"/workspaces/{self.workspace_id}/certificates":
                return 200, None  # an empty body: no certificate (PLAINTEXT)
            if path == f"/{self.workspace_id}/topics":
                return self._list_topics()
            if match := re.fullmatch(rf"/{ws}/topics/([^/]+)", path):
                return self._get_topic(match.group(1))
        elif method == "POST" and path == f"/{self.workspace_id}/topics":
            try:
                return self._create_topic(json.loads(body or b"{}"))
            except json.JSONDecodeError:
                return 400, {"message": "invalid JSON"}
        return 404, {"message": f"no endpoint {method} {path} in this stand-in"}


class _Handler(BaseHTTPRequestHandler):
    portal: QuixPortal
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects

    def _handle(self, method: str) -> None:
        portal = self.portal
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        authorization = self.headers.get("Authorization")
        if authorization != f"Bearer {portal.token}":
            status, answer = 401, {"message": "Unauthorized"}
        else:
            try:
                status, answer = portal.route(method, self.path, body)
            except Exception as exc:  # surface it to quixstreams and the test, not a hang
                status, answer = 500, {"message": f"stand-in failed: {exc!r}"}
        with portal._lock:
            portal.served.append(
                Served(method, self.path, status, authorization, self.headers.get("X-Version"))
            )
        data = b"" if answer is None else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test asserts on ``served`` instead."""
