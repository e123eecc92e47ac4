"""What a 2xx waits for: the route's ack mode (see ``hookd.publish.outbox``)."""

from __future__ import annotations

import enum


class AckMode(enum.Enum):
    """What a 2xx waits for."""

    KAFKA = "kafka"
    KAFKA_OR_SPOOL = "kafka, spool on failure"
    SPOOL = "spool"
