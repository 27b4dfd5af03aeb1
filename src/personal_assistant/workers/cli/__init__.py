"""Operator commands: ``celery ... dlq`` (dead letters) and ``make run`` (the local stack)."""
