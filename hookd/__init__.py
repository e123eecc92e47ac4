"""hookd: verify inbound webhooks over their exact bytes and publish them to Kafka.

A 2xx answer means the event is durable: acknowledged by Kafka (``acks=all``) or, where a
route asks for it, committed to the local spool.
"""

__version__ = "0.1.0"
