"""A route's ``allow_from``: networks inline, and ``file:PATH`` lists (one per line, ``#``
comments), as GitHub (``/meta``), Stripe (``ips_webhooks.txt``) and others publish them.

Files are read when the config is loaded, so a SIGHUP reload reads them again: refresh the
file (a cron job, a mounted ConfigMap), then reload. A file that cannot be read, or holds no
network, or a line that is not one, is a config error naming the entry and the line: the
running list stays (a reload is refused), and a start stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hookd.net.networks import IPNetwork, parse_network

FILE_PREFIX = "file:"
#: Bad lines reported per file before the rest are only counted.
MAX_LINE_PROBLEMS = 5
#: A file larger than this is refused (a published list is a few KiB).
MAX_FILE_BYTES = 4 * 1024 * 1024


def parse_lines(text: str) -> tuple[list[IPNetwork], list[str]]:
    """The networks of a list file and a reason per bad line (``line N: …``)."""
    networks: list[IPNetwork] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.partition("#")[0].strip()
        if not entry:
            continue
        try:
            networks.append(parse_network(entry))
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
    return networks, problems


def read_file(path: Path) -> tuple[list[IPNetwork], list[str]]:
    """A list file's networks and what is wrong with it (every problem, bounded)."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return [], [f"cannot read {path}: {exc.strerror or exc}"]
    if len(raw) > MAX_FILE_BYTES:
        return [], [f"{path} is larger than {MAX_FILE_BYTES} bytes"]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return [], [f"{path} is not UTF-8 text"]
    networks, problems = parse_lines(text)
    if len(problems) > MAX_LINE_PROBLEMS:
        more = len(problems) - MAX_LINE_PROBLEMS
        problems = [*problems[:MAX_LINE_PROBLEMS], f"and {more} more lines"]
    problems = [f"{path} {problem}" for problem in problems]
    if not networks and not problems:
        problems.append(f"{path} holds no address or network")
    return networks, problems


def resolve(entries: Sequence[object], base: Path) -> tuple[list[str], list[tuple[int, str]]]:
    """``allow_from`` entries as the networks they stand for (files read, relative to
    ``base``), and each problem as ``(entry index, reason)``; bad entries add no network."""
    networks: list[str] = []
    problems: list[tuple[int, str]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, str):
            problems.append((index, "expected a network (CIDR) or file:PATH"))
            continue
        if entry.startswith(FILE_PREFIX):
            name = entry.removeprefix(FILE_PREFIX)
            if not name:
                problems.append((index, "file: needs a path"))
                continue
            found, wrong = read_file(base / name)
            networks += [str(network) for network in found]
            problems += [(index, reason) for reason in wrong]
            continue
        try:
            networks.append(str(parse_network(entry)))
        except ValueError as exc:
            problems.append((index, str(exc)))
    return networks, problems
