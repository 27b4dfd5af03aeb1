"""Tasks of the sync domain (queue ``sync_tasks``): iCalendar synchronisation.

Routed by module name (see routing.py); only workers consuming ``sync_tasks`` run them.
"""

from __future__ import annotations

from typing import Any

from personal_assistant.workers.celery_app import app
from personal_assistant.workers.tasks.base_tasks import BaseTask


@app.task(base=BaseTask, bind=True)
def probe(self: BaseTask) -> dict[str, Any]:
    """Answer where it ran: proves end to end that this queue has a live worker."""
    return self.describe_execution()
