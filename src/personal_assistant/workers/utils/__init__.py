"""The seed's import paths, kept as thin re-exports of the packages that now hold the code.

``utils.metrics`` -> ``metrics.collector``; ``utils.alerting`` -> ``alerting``;
``utils.task_monitoring`` -> ``monitoring``; ``utils.health_check`` -> ``monitoring.health_check``;
``utils.error_handling`` -> ``errors`` and ``dead_letters``. New code imports the packages.
"""
