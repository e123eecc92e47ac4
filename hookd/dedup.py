"""Redelivery dedup: a bounded window of delivery ids already published, per route.

Providers retry deliveries they think failed (Stripe, Svix, Shopify for days). An id enters the
window only once its record is durable, so a request that got 503 is published on retry.
Entries leave oldest first, when the window is full or their TTL has passed. Pure: the clock
is passed in.

Some schemes take the delivery id from a header the signature does not cover (GitHub, Shopify,
Twilio), so a replayed signed body could carry any id. A request is therefore a duplicate only
when both its id and its body's fingerprint match what was published: a replay with a chosen id
cannot make a later genuine delivery look like a duplicate.
"""

from __future__ import annotations

from collections import OrderedDict


class DedupWindow:
    """At most ``max_entries`` ids, each remembered for ``ttl_s`` after it was published."""

    __slots__ = ("_published", "max_entries", "ttl_s")

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._published: OrderedDict[bytes, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._published)

    def seen(self, delivery_id: bytes, fingerprint: int, now: float) -> bool:
        """True when this id, with this body, was published within the TTL."""
        entry = self._published.get(delivery_id)
        return entry is not None and entry[1] == fingerprint and now - entry[0] < self.ttl_s

    def add(self, delivery_id: bytes, fingerprint: int, now: float) -> None:
        """Remember an id whose record is durable; evict expired and overflowing entries."""
        published = self._published
        published[delivery_id] = (now, fingerprint)
        published.move_to_end(delivery_id)
        horizon = now - self.ttl_s
        while published:
            oldest_id, (oldest_at, _) = next(iter(published.items()))
            if oldest_at > horizon and len(published) <= self.max_entries:
                break
            del published[oldest_id]
