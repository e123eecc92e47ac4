"""The rejects topic's call sites in the connection, without sockets: each refusal on a known
route gives one record, nothing else does, and the answers are byte for byte those of a
listener without a rejects topic, also when writing the record fails. (The fake transport's
peer is 203.0.113.9.)"""

from __future__ import annotations

import asyncio
import json
import time

from fakes import StandInOutbox, connect, server_context

from hookd.config import validate
from hookd.record import Record
from hookd.rejects import Rejects
from hookd.routing import build_routes

TOKEN_ROUTE = {
    "path": "/t",
    "topic": "t",
    "verify": "token",
    "secrets": ["right-token-6e5d4c"],
    "max_body_bytes": 100,
}
WALLED = {**TOKEN_ROUTE, "path": "/walled", "allow_from": ["192.0.2.0/24"]}


def post(path: str, body: bytes, token: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + token
        + b"\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


REQUESTS = [
    post("/t", b"{}", b"right-token-6e5d4c"),  # 200: no record
    post("/t", b"{}", b"wrong-token-1a2b3c"),  # 401
    post("/t", b"a=1", b"wrong-token-1a2b3c", b"application/x-www-form-urlencoded"),  # 401
    b"POST /t HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",  # 413 at the head
    b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"40\r\n"
    + b"x" * 64
    + b"\r\n"
    + b"40\r\n"
    + b"y" * 64
    + b"\r\n0\r\n\r\n",  # 413 chunked
    b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nzz\r\n",  # 400
    post("/walled", b"{}", b"right-token-6e5d4c"),  # 403
    post("/nowhere", b"{}", b"wrong-token-1a2b3c"),  # 404: no route, no record
    b"GET /t HTTP/1.1\r\nHost: x\r\n\r\n",  # 405: not a refusal the topic records
]


def answers(send) -> tuple[list[bytes], list[Record]]:
    """Each request on a connection of its own; what was written, and the records sent."""
    records: list[Record] = []

    async def main() -> list[bytes]:
        config = validate({"routes": [TOKEN_ROUTE, WALLED]}, {})
        loop = asyncio.get_running_loop()
        extra = {}
        if send is not None:
            extra["rejects"] = Rejects("rejects", send(records), lambda route: None)
        ctx = server_context(config, build_routes(config), StandInOutbox(loop), **extra)
        written = []
        for data in REQUESTS:
            protocol, transport = connect(ctx, loop)
            protocol.data_received(data)
            await asyncio.sleep(0)
            written.append(bytes(transport.written))
            protocol.connection_lost(None)
        return written

    return asyncio.run(main()), records


#: The path each request names, and whether a route has it.
PATHS = ["/t"] * 6 + ["/walled", "/nowhere", "/t"]
RECORDED = {400, 401, 403, 413}


def test_a_record_per_refusal_on_a_known_route_and_the_same_answers():
    plain, _ = answers(None)
    before_ms = time.time_ns() // 1_000_000
    written, records = answers(lambda records: records.append)
    after_ms = time.time_ns() // 1_000_000
    assert written == plain  # the rejects topic changes no answer
    statuses = [int(w.split(b" ", 2)[1]) for w in written]
    assert statuses == [200, 401, 401, 413, 413, 400, 403, 404, 405]
    values = [json.loads(record.value) for record in records]
    expected = [
        (path, status)
        for path, status in zip(PATHS, statuses, strict=True)
        if status in RECORDED and path != "/nowhere"
    ]
    assert [(v["route"], v["status"]) for v in values] == expected
    assert {v["source_ip"] for v in values} == {"203.0.113.9"}
    # received_at is the connection's reading of the wall clock, as for an accepted record
    assert all(before_ms <= v["received_at"] <= after_ms for v in values), values
    for record in records:
        assert b"wrong-token-1a2b3c" not in record.value
        assert b"right-token-6e5d4c" not in record.value
    mismatch, changed, at_head, chunked, malformed = values[:5]
    assert mismatch["reason"] == "token mismatch" and mismatch["body_complete"]
    assert changed["hints"] == [
        "content-type changed: application/x-www-form-urlencoded, last accepted application/json"
    ]
    assert at_head["content_length"] == 5000 and at_head["body_size"] == 0
    assert chunked["hints"] == [
        "body arrived chunked",
        "content-type changed: none, last accepted application/json",  # it sent none
    ]
    assert 0 < chunked["body_size"] <= 100 and not chunked["body_complete"]
    assert malformed["reason"].startswith("malformed request: ")
    assert values[5]["refusal"] == "source address not allowed"  # allow_from, at the head
    assert values[5]["body_size"] == 0


def test_a_failing_record_changes_no_answer():
    def send(records):
        def broken(record: Record) -> None:
            raise RuntimeError("broker gone")

        return broken

    plain, _ = answers(None)
    written, records = answers(send)
    assert written == plain and records == []
