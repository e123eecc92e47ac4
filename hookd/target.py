"""The request target: where its path ends and its query begins. Pure, and light enough for
the log formatter and the admin listener, which need nothing else of a request."""

from __future__ import annotations


def split_target(target: bytes) -> tuple[bytes, bytes | None]:
    """A request target as ``(path, query)``: the query is what follows the first ``?``
    (``b""`` after a bare ``?``), ``None`` without one. The one place a target is split:
    routes match the path alone, logs name the path alone (a query may hold a token), and
    the URL-signing schemes sign the query exactly as received, a bare ``?`` included."""
    path, sep, query = target.partition(b"?")
    return path, (query if sep else None)
