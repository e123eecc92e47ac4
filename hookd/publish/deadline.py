"""When a commit stops waiting for Kafka, so that its request is answered inside the route's
``respond_within_s`` (and so inside the provider's delivery timeout). Pure: the outbox asks,
and sets one loop timer per commit.

Stopping early is what makes the answer land in time: a route that can spool needs time for
the spool's fsync after it gives up on Kafka, and a route that cannot needs time to write its
503. The produce is not withdrawn; if it lands later, the record is in Kafka twice (once from
the spool), which at-least-once allows: consumers deduplicate by key.
"""

from __future__ import annotations

#: How long before the deadline a route that can spool gives up on Kafka and appends to the
#: spool instead. The append waits for a group commit's fsync: milliseconds on a quiet SSD, up
#: to a few hundred under a burst on a slow disk; the 2xx must be written before the deadline,
#: not start then.
SPOOL_FALLBACK_LEAD_S = 0.5
#: How long before the deadline a route that cannot spool gives up and answers 503. Writing the
#: answer is immediate, but loop timers fire late when the loop is busy.
REFUSAL_LEAD_S = 0.1
#: The 503's reason when a route that cannot spool gives up on Kafka at its deadline.
DEADLINE_REASON = "no Kafka ack within the route's respond_within_s"


def stop_waiting_after(left_s: float, *, can_spool: bool) -> float | None:
    """Seconds from now after which a commit with ``left_s`` until its deadline stops waiting
    for Kafka, or ``None`` when the deadline has already passed (a body slower than the
    provider's timeout: nothing is left to protect, so Kafka gets its full ack timeout).

    The lead is taken off what is left, but never more than half of it: a short deadline
    still gives Kafka a chance instead of spooling or refusing everything at once."""
    if left_s <= 0:
        return None
    lead = SPOOL_FALLBACK_LEAD_S if can_spool else REFUSAL_LEAD_S
    return max(left_s - lead, left_s / 2)
