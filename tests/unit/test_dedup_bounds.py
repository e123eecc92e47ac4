"""Issue 12, finding 9: the redelivery window's memory is bounded whatever the ids' length.

Ids can come from headers the signature does not cover: 1000 replays of one captured delivery
with distinct 15 KB ids held ~15 MB in one route's window before (x workers x routes)."""

from __future__ import annotations

import gc
import tracemalloc

from hookd.dedup import ENTRY_BYTES, DedupWindow


def _retained_by(window: DedupWindow, ids: int, id_bytes: int) -> int:
    """Bytes still allocated after adding ``ids`` distinct ids of ``id_bytes`` each (every id is
    dropped by the test as soon as it was added)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(ids):
            window.add(i.to_bytes(4, "big") * (id_bytes // 4), 7, float(i))
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_1000_distinct_15_kb_ids_are_not_held_in_memory():
    window = DedupWindow(max_entries=10_000, ttl_s=86_400)
    retained = _retained_by(window, 1000, 15_000)
    assert len(window) == 1000  # all remembered ...
    assert retained < 1000 * ENTRY_BYTES  # ... in < 320 KB, not 15 MB
    assert window.seen(b"\x00\x00\x00\x01" * 3750, 7, 1000.0)  # and still found by their id


def test_the_window_bytes_are_bounded_by_its_entry_count():
    window = DedupWindow(max_entries=500, ttl_s=86_400)
    assert window.max_bytes == 500 * ENTRY_BYTES
    retained = _retained_by(window, 2000, 4000)
    assert len(window) == 500
    assert retained < window.max_bytes


def test_ids_that_differ_are_different_entries():
    window = DedupWindow(max_entries=10, ttl_s=60)
    window.add(b"a" * 300, 7, 0)
    assert window.seen(b"a" * 300, 7, 1)
    assert not window.seen(b"a" * 299, 7, 1)
    assert not window.seen(b"a" * 300 + b"b", 7, 1)
