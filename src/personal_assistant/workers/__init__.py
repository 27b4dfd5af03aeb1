"""Background workers of the personal assistant: Celery on Redis, five routed queues.

Import ``personal_assistant.workers.celery_app`` for the app; nothing is configured at
import of this package itself, so tools can read ``config`` without a broker.
"""

__version__ = "0.1.0"
