"""Operator commands: ``celery -A personal_assistant.workers.celery_app <command>``, and ``make run``."""
