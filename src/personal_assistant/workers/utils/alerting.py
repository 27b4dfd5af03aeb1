"""Seed path for alert rules and their evaluation: ``alerting.rule``, ``alerting.manager``."""

from __future__ import annotations

from personal_assistant.workers.alerting.manager import AlertManager
from personal_assistant.workers.alerting.rule import AlertRule, RuleError

__all__ = ["AlertManager", "AlertRule", "RuleError"]
