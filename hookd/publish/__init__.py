"""Making a record durable: the publisher (batches to Kafka through quixstreams), the spool (a
segment log on local disk) and the outbox that picks between them per route and answers in time.
"""
