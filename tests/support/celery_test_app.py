"""The production app plus the test tasks: ``celery -A tests.support.celery_test_app worker``."""

from personal_assistant.workers.celery_app import app
from tests.support import tasks

__all__ = ["app", "tasks"]
