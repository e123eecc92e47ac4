"""Process statistics from /proc: CPU seconds of a process tree, memory, CPU busy time.

The bench's figures (CPU µs per request, RSS/PSS, whether others used the server's CPU) are
read here, from the kernel's own accounting, so that no load generator's view enters them;
the image smoke test (the RSS inside a container) and the tests (a process's RSS and CPU under
abuse) read theirs here too.

It lives in ``scripts/`` next to the broker harness (embedded_broker.py) for the same reason:
that directory is already on every user's import path (pytest's ``pythonpath``,
``PYTHONPATH=scripts`` for ``make image-test``, and ``bench/run.py``'s one ``sys.path`` line),
so no user adds a path of its own to import it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

#: Per CPU: (busy, steal, total) jiffies since boot.
Jiffies = dict[int, tuple[int, int, int]]


@dataclass(frozen=True, slots=True)
class Memory:
    """RSS and PSS of a process tree, in KiB."""

    rss_kb: int
    pss_kb: int


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()  # fields from "state" (field 3) onwards


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant (workers, helper processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(
                    int(entry.name)
                )
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(root: int) -> float:
    """utime+stime (+ reaped children's) of the whole tree, in seconds.

    Counting cutime/cstime keeps the sum continuous when a child exits mid-window: its time
    moves from the child's utime into the parent's cutime.
    """
    ticks = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError, IndexError):
            fields = _stat_fields(pid)
            ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / CLK_TCK


def cpu_jiffies() -> Jiffies:
    """Per CPU: (busy, steal, total) jiffies since boot, from /proc/stat.

    busy = user+nice+system+irq+softirq. The machine is shared (other people's tests run on
    it too), so busy on the server's CPU minus the server's own CPU time is what *others*
    took from it during a round.
    """
    times: dict[int, tuple[int, int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, values[:8])
            busy = user + nice + system + irq + softirq
            times[int(name[3:])] = (busy, steal, busy + idle + iowait + steal)
    return times


def cpu_busy_pct(before: Jiffies, cpus: tuple[int, ...]) -> tuple[float, float]:
    """(busy %, steal %) of a set of CPUs since ``before``; 100 % = all of them busy."""
    after = cpu_jiffies()
    busy = steal = total = 0
    for cpu in cpus:
        b, s, t = (a - b for a, b in zip(after[cpu], before[cpu], strict=True))
        busy, steal, total = busy + b, steal + s, total + t
    return (100 * busy / total, 100 * steal / total) if total else (0.0, 0.0)


def rss_kb(pid: int) -> int:
    """RSS of one process (not its tree), in KiB: cheap enough to sample every few ms."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB


def memory_kb(root: int) -> Memory:
    """RSS and PSS of the tree. PSS splits shared pages (forked workers) fairly."""
    rss = pss = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            rss += rss_kb(pid)
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return Memory(rss, pss)
