"""The redelivery window: bounded, expiring, oldest out first."""

from hookd.dedup import DedupWindow


def test_seen_only_after_add_and_within_ttl():
    window = DedupWindow(max_entries=10, ttl_s=60)
    assert not window.seen(b"a", 7, 0)
    window.add(b"a", 7, 0)
    assert window.seen(b"a", 7, 59.9)
    assert not window.seen(b"a", 7, 60)


def test_full_window_evicts_oldest_first():
    window = DedupWindow(max_entries=3, ttl_s=1000)
    for i, name in enumerate((b"a", b"b", b"c", b"d")):
        window.add(name, 7, i)
    assert len(window) == 3
    assert not window.seen(b"a", 7, 4)
    assert all(window.seen(n, 7, 4) for n in (b"b", b"c", b"d"))


def test_expired_entries_are_dropped_on_add():
    window = DedupWindow(max_entries=100, ttl_s=10)
    for i in range(50):
        window.add(str(i).encode(), 7, i * 0.1)
    window.add(b"late", 7, 100)
    assert len(window) == 1


def test_re_adding_refreshes_position_and_time():
    window = DedupWindow(max_entries=2, ttl_s=10)
    window.add(b"a", 7, 0)
    window.add(b"b", 7, 1)
    window.add(b"a", 7, 9)  # published again (e.g. after its entry had expired)
    window.add(b"c", 7, 12)  # b is expired and evicted; a is fresh
    assert window.seen(b"a", 7, 12)
    assert not window.seen(b"b", 7, 12)


def test_same_id_with_another_body_is_not_a_duplicate():
    # the id may come from an unsigned header: a replay with a chosen id must not make a
    # genuine delivery look like a duplicate
    window = DedupWindow(max_entries=10, ttl_s=60)
    window.add(b"d-1", hash(b"replayed body"), 0)
    assert window.seen(b"d-1", hash(b"replayed body"), 1)
    assert not window.seen(b"d-1", hash(b"genuine body"), 1)
