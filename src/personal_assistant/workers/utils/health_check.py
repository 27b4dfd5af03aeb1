"""Seed path for the health checks: ``python -m personal_assistant.workers.utils.health_check``
runs the same command as ``monitoring.health_check``."""

from __future__ import annotations

import sys

from personal_assistant.workers.monitoring.health_check import (
    backend_ready,
    broker_ready,
    main,
)

__all__ = ["backend_ready", "broker_ready", "main"]

if __name__ == "__main__":
    sys.exit(main())
