"""Redelivery dedup: a bounded window of delivery ids already published, per route.

Providers retry deliveries they think failed (Stripe, Svix, Shopify for days). An id enters the
window only once its record is durable, so a request that got 503 is published on retry.
Entries leave oldest first, when the window is full or their TTL has passed. Pure: the clock
is passed in.
"""

from __future__ import annotations

from collections import OrderedDict


class DedupWindow:
    """At most ``max_entries`` ids, each remembered for ``ttl_s`` after it was published."""

    __slots__ = ("_published", "max_entries", "ttl_s")

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._published: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._published)

    def seen(self, delivery_id: bytes, now: float) -> bool:
        """True when this id was published within the TTL."""
        published_at = self._published.get(delivery_id)
        return published_at is not None and now - published_at < self.ttl_s

    def add(self, delivery_id: bytes, now: float) -> None:
        """Remember an id whose record is durable; evict expired and overflowing entries."""
        published = self._published
        published[delivery_id] = now
        published.move_to_end(delivery_id)
        horizon = now - self.ttl_s
        while published:
            oldest_id, oldest_at = next(iter(published.items()))
            if oldest_at > horizon and len(published) <= self.max_entries:
                break
            del published[oldest_id]
