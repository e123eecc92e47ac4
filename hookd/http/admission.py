"""The listener's in-flight budget, shared by its connections.

Two things are bounded: requests waiting to be durable (``max_in_flight``) and the bytes
held for requests (``max_in_flight_bytes``). Bytes are held from the moment they arrive: a
body still arriving reserves what it has received (never a length merely announced, so a head
alone holds nothing); a complete request is committed, counted with its size until its answer,
then released.
"""

from __future__ import annotations


class Admission:
    """In-flight counts and bytes of one listener: reserve as bytes arrive, commit a complete
    request, release it once answered."""

    __slots__ = (
        "in_flight",
        "in_flight_bytes",
        "max_in_flight",
        "max_in_flight_bytes",
        "receiving_bytes",
    )

    def __init__(self, max_in_flight: int, max_in_flight_bytes: int) -> None:
        self.max_in_flight = max_in_flight
        self.max_in_flight_bytes = max_in_flight_bytes
        self.in_flight = 0  # requests waiting to be durable
        self.in_flight_bytes = 0  # their bodies' bytes
        self.receiving_bytes = 0  # body bytes received of requests still arriving

    def budget_left(self) -> int:
        """Bytes of ``max_in_flight_bytes`` not held by bodies arriving or waiting."""
        return self.max_in_flight_bytes - self.in_flight_bytes - self.receiving_bytes

    def reserve(self, grow: int) -> bool:
        """Hold ``grow`` more bytes of a body arriving; False (nothing held) when they do not
        fit."""
        if grow > self.budget_left():
            return False
        self.receiving_bytes += grow
        return True

    def unreserve(self, held: int) -> None:
        """Give back what a body held while arriving (it is complete, or will never be)."""
        self.receiving_bytes -= held

    def commit(self, size: int) -> bool:
        """Count a complete request of ``size`` body bytes as waiting to be durable; False
        (nothing counted) when the budget has no room for it."""
        if self.in_flight >= self.max_in_flight or size > self.budget_left():
            return False
        self.in_flight += 1
        self.in_flight_bytes += size
        return True

    def release(self, size: int) -> None:
        """A committed request was answered."""
        self.in_flight -= 1
        self.in_flight_bytes -= size

    def spent(self, max_body_bytes: int) -> str | None:
        """Why new requests would get 503 here now, or ``None``: the budget is spent when
        ``max_in_flight`` requests wait to be durable, or when less room is left than one
        body of ``max_body_bytes`` or a sixteenth of the byte budget, whichever is less."""
        if self.in_flight >= self.max_in_flight:
            return f"in-flight budget spent: {self.in_flight} requests waiting to be durable"
        room = min(max_body_bytes, self.max_in_flight_bytes // 16)
        if self.budget_left() < room:
            held = self.in_flight_bytes + self.receiving_bytes
            return f"in-flight budget spent: {held} of {self.max_in_flight_bytes} bytes held"
        return None
