"""Who is on the other end: PROXY protocol headers, trusted proxies, allow-lists (pure code)."""
