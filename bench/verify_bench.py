"""Micro-benchmark: µs per ``verify`` of a correctly signed 1 KB body, per scheme.

Not a test. ``.venv/bin/python bench/verify_bench.py`` prints one line per scheme: the median
over several ``timeit`` repeats. Each verifier is built once (as per route in the server) and
the same signed request is verified in a loop, so this is the per-request hot-path cost.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import timeit
from urllib.parse import urlencode

from hookd.config import RouteConfig
from hookd.verify import SCHEMES, Headers, Request, Verifier

NOW = 1_760_000_000.0
WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()
PLAIN = "a-webhook-secret-of-32-characters"

# scheme -> route options (secrets included); every symmetric HMAC scheme.
ROUTES: dict[str, dict[str, object]] = {
    "segment": {},
    "github": {},
    "shopify": {},
    "typeform": {},
    "intercom": {},
    "bitbucket": {},
    "pagerduty": {},
    "linear": {},
    "stripe": {"secrets": ["whsec_" + PLAIN]},
    "calendly": {},
    "paddle": {},
    "standard-webhooks": {"secrets": [WHSEC]},
    "slack": {},
    "zoom": {},
    "twilio": {"public_url": "https://hooks.example.com/twilio"},
    "hubspot": {"public_url": "https://hooks.example.com/hubspot"},
    "square": {"public_url": "https://hooks.example.com/square"},
    "hmac": {"header": "X-Signature"},
    "hmac (ts+id template)": {
        "header": "X-Signature",
        "template": "{id}.{ts}.{body}",
        "timestamp_header": "X-Timestamp",
        "id_header": "X-Id",
    },
}


def json_body(size: int) -> bytes:
    head = b'{"id":"evt_1NxYzAbCdEfGh","type":"invoice.paid","data":{"pad":"'
    tail = b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def form_body(size: int) -> bytes:
    fields = {"AccountSid": "AC" + "0" * 32, "From": "+14158675309", "To": "+18005551212"}
    body = urlencode(fields).encode()
    return body + b"&Body=" + b"y" * (size - len(body) - 6)


def build(name: str, options: dict[str, object], size: int) -> tuple[Verifier, Request]:
    scheme = name.split(" ")[0]
    options = dict(options)
    options.setdefault("secrets", [PLAIN])
    route = RouteConfig(path="/in", topic="t", verify=scheme, **options)  # type: ignore[arg-type]
    verifier = SCHEMES[scheme].from_route(route)
    body = form_body(size) if scheme == "twilio" else json_body(size)
    target = b"/in"
    headers = [(n.lower().encode(), v.encode()) for n, v in verifier.sign(body, target, NOW)]
    request = Request(method=b"POST", target=target, headers=Headers(headers), body=body)
    verifier.verify(request, NOW)  # must accept, or the number is meaningless
    return verifier, request


def measure(verifier: Verifier, request: Request, number: int, repeat: int) -> float:
    timings = timeit.repeat(lambda: verifier.verify(request, NOW), number=number, repeat=repeat)
    return statistics.median(timings) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024, help="body bytes (default 1024)")
    parser.add_argument("--number", type=int, default=20000, help="verifies per repeat")
    parser.add_argument("--repeat", type=int, default=7, help="repeats; the median is shown")
    args = parser.parse_args()
    print(f"{'scheme':<24}{'µs/verify':>10}   ({args.size} B body, median of {args.repeat})")
    for name, options in ROUTES.items():
        verifier, request = build(name, options, args.size)
        print(f"{name:<24}{measure(verifier, request, args.number, args.repeat):>10.2f}")


if __name__ == "__main__":
    main()
