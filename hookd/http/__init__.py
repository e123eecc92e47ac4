"""The HTTP/1.1 shell: a sans-IO framing parser (a fast path, h11 the parser of record), the
intake decision, admission counters, and the asyncio Protocol that drives them."""
