"""Break the behaviour a test claims to guard and check that the test then fails.

Each mutation is a textual replacement in a temporary copy of the working tree (the repository
itself is never touched). The named tests run against that copy with this checkout's virtual
environment, one pytest run per test; a test that still passes is a test that cannot fail, and
makes the script exit 1.

    .venv/bin/python scripts/mutations.py              # every mutation
    .venv/bin/python scripts/mutations.py spool        # those whose name contains "spool"
    .venv/bin/python scripts/mutations.py --baseline   # instead: every test passes unmutated

The copy leaves out .git, .venv and caches (a fresh hypothesis database each time); hookd is
imported from the copy (PYTHONPATH), also by the hookd processes the integration tests start.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTEST = ROOT / ".venv" / "bin" / "pytest"
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", ".hypothesis", ".pytest_cache", ".ruff_cache", "__pycache__", "results"
)
FUZZ = "tests/unit/test_protocol_fuzz.py"
EDGES = "tests/integration/test_http_edges.py"
SPOOL = "tests/unit/test_spool.py"
PROTOCOL = "hookd/http/protocol.py"
FAULTS = "tests/integration/test_faults.py"
OUTBOX = "tests/unit/test_outbox.py"
HEALTH = "tests/unit/test_health.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    #: (old, new) applied in order; each ``old`` must be in the file (every occurrence replaced).
    edits: tuple[tuple[str, str], ...]
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation(
        "check_deadline returns at once (no timeout ever fires)",
        PROTOCOL,
        (("        if now < self._deadline or state is _State.CLOSED:", "        if True:"),),
        (
            f"{FUZZ}::test_a_stall_past_its_deadline_ends_the_connection",
            f"{FUZZ}::test_arbitrary_bytes",
            f"{EDGES}::test_slow_head_408_after_the_header_timeout",
        ),
    ),
    Mutation(
        "header and body deadlines swapped",
        PROTOCOL,
        (
            ("config.header_timeout_s,  # HEAD", "config.body_timeout_s,  # HEAD"),
            ("config.body_timeout_s,  # BODY", "config.header_timeout_s,  # BODY"),
        ),
        (
            f"{FUZZ}::test_a_stall_past_its_deadline_ends_the_connection",
            f"{EDGES}::test_slow_head_408_after_the_header_timeout",
            f"{EDGES}::test_slow_body_408_after_the_body_timeout",
        ),
    ),
    Mutation(
        "Content-Length body limit removed",
        PROTOCOL,
        (("        if head.content_length > route.max_body_bytes:", "        if False:"),),
        (
            f"{EDGES}::test_body_over_limit_413_decided_from_content_length",
            f"{EDGES}::test_expect_100_continue_refused_early_when_too_large",
        ),
    ),
    Mutation(
        "chunked body limit removed",
        PROTOCOL,
        (
            (
                "        if self._parser.body_received > exchange.route.max_body_bytes:",
                "        if False:",
            ),
        ),
        (f"{FUZZ}::test_bodies_and_heads_over_the_limits_are_refused",),
    ),
    Mutation(
        "head size limit removed (no 431)",
        "hookd/http/framing.py",
        (
            ("        if end > self._max_head:", "        if False:"),
            ("            if len(buffer) > self._max_head + 3:", "            if False:"),
        ),
        (f"{FUZZ}::test_bodies_and_heads_over_the_limits_are_refused",),
    ),
    Mutation(
        "EOF mid-body answers the partial body as a whole request",
        PROTOCOL,
        (
            (
                '        never can be, so the connection closes."""\n',
                '        never can be, so the connection closes."""\n'
                "        if self._state is _State.BODY:\n"
                "            self._on_request()\n"
                "            return True\n",
            ),
        ),
        (f"{EDGES}::test_abrupt_disconnects_leave_server_healthy",),
    ),
    Mutation(
        "a cancelled Spool.open leaves its writer and lock behind",
        "hookd/publish/spool.py",
        (("            await spool.close()  # a failed or cancelled open", "            pass  #"),),
        (f"{SPOOL}::test_a_cancelled_open_releases_the_lock",),
    ),
    Mutation(
        "spool appends acknowledged without fdatasync",
        "hookd/publish/segments.py",
        (("            os.fdatasync(fd)\n        except OSError:", "        except OSError:"),),
        (f"{SPOOL}::test_power_loss_at_any_moment_keeps_every_acknowledged_append",),
    ),
    Mutation(
        "a new spool segment's directory entry not fsynced",
        "hookd/publish/segments.py",
        (
            (
                "        fsync_dir(self.log_dir)\n        self._active = (base, fd)",
                "        self._active = (base, fd)",
            ),
        ),
        (f"{SPOOL}::test_power_loss_at_any_moment_keeps_every_acknowledged_append",),
    ),
    Mutation(
        "the spool's committed head trusted without its CRC",
        "hookd/publish/segments.py",
        (("return seq if zlib.crc32(data[:8]) == crc else 0", "return seq"),),
        (f"{SPOOL}::test_power_loss_at_any_moment_keeps_every_acknowledged_append",),
    ),
    Mutation(
        "a torn spool tail is kept",
        "hookd/publish/segments.py",
        (
            (
                "            if scan.valid_end < scan.file_size:\n                self._cut(",
                "            if False:\n                self._cut(",
            ),
        ),
        (f"{SPOOL}::test_a_torn_tail_is_cut_and_appends_go_on_after_it",),
    ),
    Mutation(
        "a failed spool write is left on the segment",
        "hookd/publish/segments.py",
        (("            self._truncate_back(fd, start)\n", ""),),
        (f"{SPOOL}::test_a_failed_write_fails_its_appends_and_the_spool_recovers",),
    ),
    Mutation(
        "TLS listener serves plain HTTP",
        "hookd/app.py",
        (("                ssl=tls,\n", "                ssl=None,\n"),),
        ("tests/integration/test_tls.py::test_tls_listener_accepts_a_verified_tls_client",),
    ),
    Mutation(
        "a worker's death restarts the whole set (the survivor is killed too)",
        "hookd/workers.py",
        (
            (
                "            self._backoff[index] = backoff\n",
                "            self._backoff[index] = backoff\n"
                "            for other in list(self._workers):\n"
                "                _signal(other, signal.SIGKILL)\n",
            ),
        ),
        (
            "tests/integration/test_workers_reload.py"
            "::test_two_workers_share_the_port_and_answer_as_one",
        ),
    ),
    Mutation(
        "Stripe loses the event type",
        "hookd/verify/timestamped_hmac.py",
        (
            (
                "event_type=json_field(document, self.type_field) if self.type_field else None,",
                "event_type=None,",
            ),
        ),
        (
            "tests/unit/verify/test_verify_sdk.py::test_stripe_several_v1_entries_are_all_tried",
            "tests/unit/verify/test_verify_catalogue.py::test_rotation_accepts_the_second_secret",
        ),
    ),
    Mutation(
        "headers confused by prefix (an unrelated header makes a duplicate)",
        "hookd/verify/base.py",
        (
            (
                "            if item_name == name:\n                if found is not None:",
                "            if item_name[:5] == name[:5]:\n                if found is not None:",
            ),
        ),
        (
            "tests/unit/verify/test_verify_property.py::test_signed_requests_survive_arbitrary_bodies",
        ),
    ),
    Mutation(
        "fuzz strategy: bodies never over the limit",
        FUZZ,
        (
            (
                "st.sampled_from((limit - 1, limit, limit + 1)) | st.integers(0, 2 * limit)",
                "st.integers(0, limit)",
            ),
        ),
        (f"{FUZZ}::test_bodies_and_heads_over_the_limits_are_refused",),
    ),
    Mutation(
        "fuzz strategy: stalls always short",
        FUZZ,
        (("    seconds = draw(near | st.floats(0.1, 2 * COMMIT_TIMEOUT_S))", "    seconds = 0.1"),),
        (f"{FUZZ}::test_a_stall_past_its_deadline_ends_the_connection",),
    ),
    Mutation(
        "fuzz strategy: no whole requests among the arbitrary bytes",
        FUZZ,
        (
            (
                "stream=st.tuples(WHOLE | JUNK, st.lists(WHOLE | JUNK | JUNK,",
                "stream=st.tuples(JUNK, st.lists(JUNK,",
            ),
        ),
        (f"{FUZZ}::test_arbitrary_bytes",),
    ),
    Mutation(
        "the producer is never rebuilt",
        "hookd/publish/health.py",
        (("        return self.rebuild_reason\n", "        return None\n"),),
        (
            f"{HEALTH}::test_a_fenced_producer_is_rebuilt_once_the_broker_answers",
            f"{OUTBOX}::test_a_fenced_producer_is_replaced_and_delivery_resumes",
            f"{FAULTS}::test_broker_frozen_past_the_ack_timeout_recovers[2]",
        ),
    ),
    Mutation(
        "a broker marked down is never seen up again",
        "hookd/publish/health.py",
        (("        self.broker_down = None\n", "        pass\n"),),
        (
            f"{HEALTH}::test_records_fail_at_once_while_the_broker_is_unreachable",
            f"{FAULTS}::test_broker_frozen_past_the_ack_timeout_recovers[3]",
        ),
    ),
    Mutation(
        "readiness ignores failing deliveries",
        "hookd/publish/outbox.py",
        (("        problem = health.failing_reason()\n", "        problem = None\n"),),
        (f"{OUTBOX}::test_unready_when_the_spool_stops_draining_and_wedged_after_the_bound",),
    ),
    Mutation(
        "lost topics are not created again",
        "hookd/publish/publisher.py",
        (
            (
                "if t not in self._names or self._names[t] in missing}",
                "if t not in self._names}",
            ),
        ),
        (
            f"{OUTBOX}::test_a_topic_lost_by_the_broker_is_created_again_and_delivery_resumes",
            f"{FAULTS}::test_broker_restarted_empty_recovers",
        ),
    ),
    Mutation(
        "orphaned spool files are not adopted",
        "hookd/publish/outbox.py",
        (("            if index < self._worker_count or self._closing:", "            if True:"),),
        (
            f"{OUTBOX}::test_a_spool_file_no_worker_index_owns_is_forwarded_and_removed",
            f"{FAULTS}::test_fewer_workers_forward_every_spool_file",
        ),
    ),
    Mutation(
        "poison records are retried forever",
        "hookd/publish/outbox.py",
        (
            (
                "elif isinstance(outcome, PublishError) and outcome.failure is Failure.RECORD:",
                "elif False:",
            ),
        ),
        (
            f"{OUTBOX}::test_a_poison_record_in_the_spool_is_set_aside_and_the_rest_delivered",
            f"{FAULTS}::test_a_poison_record_in_the_spool_does_not_stop_the_ones_behind_it",
        ),
    ),
    Mutation(
        "no offline boot",
        "hookd/startup.py",
        (
            (
                "if not any(route.ack_mode is not AckMode.KAFKA for route in routes.routes):",
                "if True:",
            ),
        ),
        (f"{FAULTS}::test_offline_boot_serves_from_the_spool_and_forwards_when_the_broker_comes",),
    ),
    Mutation(
        "the supervisor never restarts an unhealthy worker",
        "hookd/workers.py",
        (("            if count == UNHEALTHY_CHECKS:", "            if False:"),),
        (
            "tests/unit/test_supervisor_health.py"
            "::test_a_worker_unhealthy_three_checks_in_a_row_is_terminated_then_killed",
        ),
    ),
)


def copy_tree(destination: Path) -> None:
    shutil.copytree(ROOT, destination, ignore=IGNORED, symlinks=True)


def apply(tree: Path, mutation: Mutation) -> None:
    path = tree / mutation.path
    text = path.read_text()
    for old, new in mutation.edits:
        if old not in text:
            raise SystemExit(f"{mutation.name}: {old!r} not in {mutation.path}: update the script")
        text = text.replace(old, new)
    path.write_text(text)


def run_test(tree: Path, test: str, timeout: float) -> tuple[str, float]:
    """'passed', 'failed' or why neither, and the seconds it took."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [str(PYTEST), "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", test]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=tree, env=env, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f}s", time.monotonic() - started
    elapsed = time.monotonic() - started
    return {0: "passed", 1: "failed"}.get(done.returncode, f"rc {done.returncode}"), elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="run the mutations whose name contains one")
    parser.add_argument(
        "--baseline", action="store_true", help="only check that the tests pass unmutated"
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds per test run")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or any(w in m.name for w in args.only)]
    survivors = 0
    with tempfile.TemporaryDirectory(prefix="hookd-mutations-") as scratch:
        if args.baseline:
            tree = Path(scratch) / "baseline"
            copy_tree(tree)
            for test in sorted({t for m in chosen for t in m.tests}):
                outcome, seconds = run_test(tree, test, args.timeout)
                print(f"baseline: {test}: {outcome} ({seconds:.0f}s)", flush=True)
                survivors += outcome != "passed"
            print(f"{survivors} problem(s)" if survivors else "every test passes", flush=True)
            return 1 if survivors else 0
        for n, mutation in enumerate(chosen):
            tree = Path(scratch) / f"m{n}"
            copy_tree(tree)
            apply(tree, mutation)
            for test in mutation.tests:
                outcome, seconds = run_test(tree, test, args.timeout)
                verdict = "FAILS, as it must" if outcome == "failed" else f"NOT KILLED: {outcome}"
                print(f"{mutation.name} -> {test}: {verdict} ({seconds:.0f}s)", flush=True)
                survivors += outcome != "failed"
            shutil.rmtree(tree)
    print(f"{survivors} problem(s)" if survivors else "every mutation is caught", flush=True)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
