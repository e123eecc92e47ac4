"""Logging: one line per event on stderr, as JSON or as text.

hookd logs what an operator acts on: start-up and shutdown, broker state changes, reloads,
and one line per refused request (status, reason, route, a request id). It never logs a
secret, a signature, a query string or a body: the fields below are all it adds, and a
refusal's reason names what was wrong, never a value received or expected. The one value
from a request it logs is the path of a request no route takes (404), without its query,
its control characters escaped and cut at :data:`MAX_PATH_CHARS`: to find a provider URL
with a typo or a trailing slash.

Text lines end in ``name=value`` fields; string values are quoted (``reason="signature
mismatch"``, JSON string escapes), numbers are not, so a field can be read back however it
is spelled.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Literal

import orjson

from hookd.target import split_target

LogFormat = Literal["json", "text"]

#: Extra fields a log call may carry (``log.info(..., extra={...})``), in output order.
FIELDS = (
    "worker",
    "request_id",
    "route",
    "path",
    "status",
    "reason",
    "source_ip",
)
#: A logged request path is cut at this many characters (escapes counted), then ``…``.
MAX_PATH_CHARS = 200


def request_path(target: bytes) -> str:
    """A request target as a log field: the path only (a query may hold a token), bytes
    outside printable ASCII escaped (``\\x00``, ``\\xff``, a backslash as ``\\\\``), at
    most :data:`MAX_PATH_CHARS` characters."""
    path = split_target(target)[0]
    out: list[str] = []
    size = 0
    for byte in path:
        if byte == 0x5C:
            piece = "\\\\"
        elif 0x20 < byte < 0x7F:
            piece = chr(byte)
        else:
            piece = f"\\x{byte:02x}"
        if size + len(piece) > MAX_PATH_CHARS:
            return "".join(out) + "…"
        out.append(piece)
        size += len(piece)
    return "".join(out)


def _text_value(value: object) -> str:
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    return str(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{name}={_text_value(value)}"
            for name in FIELDS
            if (value := getattr(record, name, None)) is not None
        )
        text = f"{_iso(record.created)} {record.levelname} {record.name} {record.getMessage()}"
        if fields:
            text += " " + fields
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _Worker(logging.Filter):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def configure(log_format: LogFormat = "text", level: int = logging.INFO) -> None:
    """Route every logger (quixstreams' and librdkafka's too) to one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def tag_worker(index: int) -> None:
    """In a worker process: every line says which worker wrote it."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Worker(index))


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"
