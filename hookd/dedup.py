"""Redelivery dedup: a bounded window of delivery ids already published, per route.

Providers retry deliveries they think failed (Stripe, Svix, Shopify for days). An id enters the
window only once its record is durable, so a request that got 503 is published on retry.
Entries leave oldest first, when the window is full or their TTL has passed. Pure: the clock
is passed in.

Some schemes take the delivery id from a header the signature does not cover (GitHub, Shopify,
Twilio), so a replayed signed body could carry any id. A request is therefore a duplicate only
when both its id and its body's fingerprint match what was published: a replay with a chosen id
cannot make a later genuine delivery look like a duplicate.

The window keys entries by a 16-byte BLAKE2b digest of the id, never the id itself, so its
memory is bounded by its entry count alone, whatever the ids' length: about
``ENTRY_BYTES`` per entry (1000 replays with distinct 15 KB ids hold ~210 KB, not 15 MB).
Unsigned ids are also refused beyond 200 bytes by the schemes (``MAX_DELIVERY_ID_BYTES``).
"""

from __future__ import annotations

from collections import OrderedDict
from hashlib import blake2b

#: Upper bound of one entry's memory on CPython 3.11 (64-bit): the ordered dict's slot and
#: link node, the 16-byte digest (49 B as a ``bytes``), the ``(time, fingerprint)`` tuple and
#: its float and int, and the dict's spare slots under churn. Measured at 204-295 B (full
#: windows of 100-10000 entries, 1-50x their size added); tests/unit/test_dedup_bounds.py
#: checks it.
ENTRY_BYTES = 320
_DIGEST_BYTES = 16


def _digest(delivery_id: bytes) -> bytes:
    return blake2b(delivery_id, digest_size=_DIGEST_BYTES).digest()


class DedupWindow:
    """At most ``max_entries`` ids, each remembered for ``ttl_s`` after it was published;
    at most ``max_entries * ENTRY_BYTES`` bytes, whatever the ids."""

    __slots__ = ("_published", "max_entries", "ttl_s")

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._published: OrderedDict[bytes, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._published)

    @property
    def max_bytes(self) -> int:
        """What the window can hold at most, in bytes (an estimate from ``ENTRY_BYTES``)."""
        return self.max_entries * ENTRY_BYTES

    def seen(self, delivery_id: bytes, fingerprint: int, now: float) -> bool:
        """True when this id, with this body, was published within the TTL."""
        entry = self._published.get(_digest(delivery_id))
        return entry is not None and entry[1] == fingerprint and now - entry[0] < self.ttl_s

    def add(self, delivery_id: bytes, fingerprint: int, now: float) -> None:
        """Remember an id whose record is durable; evict expired and overflowing entries."""
        published = self._published
        key = _digest(delivery_id)
        published[key] = (now, fingerprint)
        published.move_to_end(key)
        horizon = now - self.ttl_s
        while published:
            oldest_id, (oldest_at, _) = next(iter(published.items()))
            if oldest_at > horizon and len(published) <= self.max_entries:
                break
            del published[oldest_id]
