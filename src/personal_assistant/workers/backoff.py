"""How long to wait before trying again: exponential backoff with "equal jitter".

One rule for every retry the package schedules (task retries in tasks/base_tasks.py, deferred
e-mails in mail/marks.py): the n-th delay is drawn from ``[d/2, d]`` with ``d = base * 2**n``,
both ends capped. Each range starts where the last one ended, so delays never shrink (also at
the cap, where they settle at the maximum), yet clients that failed together do not retry in
lockstep.

Pure module: no Redis, Celery or kombu import.
"""

from __future__ import annotations

import random


def backoff_delay(
    retries: int, *, base: float, maximum: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry number ``retries + 1`` (``retries`` already made)."""
    n = max(retries, 0)
    upper = min(maximum, base * 2**n)
    lower = min(maximum, base * 2**n / 2)
    return float(lower + (rng or random).uniform(0, upper - lower))
