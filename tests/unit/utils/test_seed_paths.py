"""Every name the seed's callers use still imports from the seed's path (DESIGN.md section 3).

Each module is imported by its dotted path written out here, as a caller writes it, and each
name is checked for the documented signature and, where cheap, for doing what it says.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from celery import Celery
from celery.beat import Scheduler
from pydantic_settings import BaseSettings

from tests.support.worker import worker_env

PACKAGE = "personal_assistant.workers"
EMPTY = inspect.Parameter.empty

# The seed's five beat tasks.
SEED_BEAT_TASKS = (
    "personal_assistant.workers.tasks.ai_tasks.process_due_ai_tasks",
    "personal_assistant.workers.tasks.email_tasks.process_email_queue",
    "personal_assistant.workers.tasks.sync_tasks.sync_calendar_events",
    "personal_assistant.workers.tasks.file_tasks.cleanup_temp_files",
    "personal_assistant.workers.tasks.maintenance_tasks.cleanup_old_logs",
)


def seed(path: str) -> ModuleType:
    """The module at the seed's dotted ``path``."""
    return importlib.import_module(path)


def parameters(obj: Any) -> dict[str, inspect.Parameter]:
    """``obj``'s parameters by name (``self`` left out of bound methods)."""
    return dict(inspect.signature(obj).parameters)


def defaults(obj: Any) -> dict[str, Any]:
    """``obj``'s parameters with their defaults (``EMPTY`` when required)."""
    return {name: p.default for name, p in parameters(obj).items()}


# --- the app and its settings ----------------------------------------------------------------


def test_the_app_is_celery_app_colon_app() -> None:
    module = seed("personal_assistant.workers.celery_app")

    assert isinstance(module.app, Celery)


def test_the_settings_class_reads_every_variable_of_the_seeds_compose_file(
    clean_env: pytest.MonkeyPatch,
) -> None:
    settings_class = seed("personal_assistant.workers.config").WorkerSettings
    variables = {
        "ENVIRONMENT": "staging",
        "DEBUG": "true",
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
        "CELERY_RESULT_BACKEND": "redis://127.0.0.1:1/1",
        "WORKER_QUEUE": "ai_tasks,email_tasks",
        "WORKER_CONCURRENCY": "3",
        "WORKER_MAX_TASKS_PER_CHILD": "50",
        "METRICS_ENABLED": "false",
        "ALERTING_ENABLED": "false",
        "SCHEDULER_ENABLED": "false",
    }
    for name, value in variables.items():
        clean_env.setenv(name, value)

    settings = settings_class()

    assert issubclass(settings_class, BaseSettings)
    assert {name.lower() for name in variables} <= set(settings_class.model_fields)
    assert (settings.environment, settings.debug) == ("staging", True)
    assert settings.celery_broker_url == "redis://127.0.0.1:1/0"
    assert settings.celery_result_backend == "redis://127.0.0.1:1/1"
    assert settings.worker_queue == ["ai_tasks", "email_tasks"]
    assert (settings.worker_concurrency, settings.worker_max_tasks_per_child) == (3, 50)
    assert not (settings.metrics_enabled or settings.alerting_enabled or settings.scheduler_enabled)


# --- schedulers.dependency_scheduler ---------------------------------------------------------


def test_task_dependency_takes_the_seeds_fields_and_defaults() -> None:
    task_dependency = seed(
        "personal_assistant.workers.schedulers.dependency_scheduler"
    ).TaskDependency

    assert list(defaults(task_dependency))[:5] == [
        "task_id",
        "depends_on",
        "condition",
        "timeout",
        "trigger_rule",
    ]
    assert defaults(task_dependency)["task_id"] is EMPTY
    assert defaults(task_dependency)["condition"] is None
    assert defaults(task_dependency)["timeout"] is None
    assert defaults(task_dependency)["trigger_rule"] == "all_success"
    dependency = task_dependency("b", ["a"], timeout=timedelta(minutes=1))
    assert (dependency.task_id, dependency.depends_on) == ("b", ["a"])


def test_dependency_scheduler_has_the_seeds_methods_and_orders_two_tasks() -> None:
    module = seed("personal_assistant.workers.schedulers.dependency_scheduler")
    scheduler = module.DependencyScheduler()

    scheduler.add_dependency(module.TaskDependency("report", ["fetch"]))

    assert set(scheduler.dependencies) == {"report"}
    assert scheduler.get_execution_order() == ["fetch", "report"]
    assert scheduler.check_dependencies_met("fetch")
    assert not scheduler.check_dependencies_met("report")
    assert scheduler.record_status("fetch", "completed") == ["report"]
    assert scheduler.check_dependencies_met("report")


def test_record_status_takes_task_id_status_and_an_optional_result() -> None:
    scheduler_class = seed(
        "personal_assistant.workers.schedulers.dependency_scheduler"
    ).DependencyScheduler

    record_status = defaults(scheduler_class.record_status)

    assert list(record_status)[:4] == ["self", "task_id", "status", "result"]
    assert record_status["result"] is None


def test_cycle_and_condition_errors_are_value_errors_raised_for_bad_workflows() -> None:
    module = seed("personal_assistant.workers.schedulers.dependency_scheduler")
    scheduler = module.DependencyScheduler()
    scheduler.add_dependency(module.TaskDependency("b", ["a"]))

    assert issubclass(module.CycleError, ValueError)
    assert issubclass(module.ConditionError, ValueError)
    with pytest.raises(module.CycleError):
        scheduler.add_dependency(module.TaskDependency("a", ["b"]))
    with pytest.raises(module.ConditionError):
        scheduler.add_dependency(module.TaskDependency("c", ["a"], condition="import os"))


@pytest.mark.parametrize(
    ("function", "first"),
    [("submit_workflow", "definition"), ("workflow_status", "workflow_id")],
)
def test_the_workflow_functions_take_the_app_as_an_optional_keyword(
    function: str, first: str
) -> None:
    module = seed("personal_assistant.workers.schedulers.dependency_scheduler")

    params = parameters(getattr(module, function))

    assert list(params) == [first, "app"]
    assert params[first].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert params["app"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["app"].default is None


# --- schedulers.enhanced_scheduler -----------------------------------------------------------


def test_the_enhanced_scheduler_is_a_beat_scheduler() -> None:
    module = seed("personal_assistant.workers.schedulers.enhanced_scheduler")

    assert issubclass(module.EnhancedScheduler, Scheduler)


# --- utils -----------------------------------------------------------------------------------


def test_the_metrics_collector_records_one_task_and_summarises_it() -> None:
    module = seed("personal_assistant.workers.utils.metrics")
    collector = module.MetricsCollector()

    collector.start_task("id-1", "send_email")
    collector.end_task("id-1", "completed")

    record = collector.metrics["id-1"]
    assert isinstance(record, module.TaskMetrics)
    assert (record.task_name, record.status) == ("send_email", "completed")
    assert collector.get_performance_summary()["send_email"]["count"] == 1


def test_the_alert_manager_sends_a_rule_that_fires_through_send_alert(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = seed("personal_assistant.workers.utils.alerting")
    sent: list[tuple[Any, Any]] = []
    manager = module.AlertManager()
    monkeypatch.setattr(manager, "_send_alert", lambda rule, metrics: sent.append((rule, metrics)))
    rule = module.AlertRule(
        name="failures",
        condition="task_failure",
        threshold=1,
        window=timedelta(minutes=5),
        channels=["log"],
        message_template="{count} failures",
    )
    manager.add_rule(rule)
    metrics = {"failed_tasks": 2}

    manager.check_alerts(metrics)

    assert manager.rules == [rule]
    assert list(parameters(module.AlertManager._send_alert)) == ["self", "rule", "metrics"]
    assert sent == [(rule, metrics)]


@pytest.mark.parametrize(
    "path",
    [
        "personal_assistant.workers.utils.task_monitoring",
        "personal_assistant.workers.utils.health_check",
        "personal_assistant.workers.utils.error_handling",
    ],
)
def test_the_other_utils_paths_import_and_export_what_they_list(path: str) -> None:
    module = seed(path)

    assert module.__all__
    assert all(hasattr(module, name) for name in module.__all__)


def test_the_health_check_module_runs_as_a_command(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "personal_assistant.workers.utils.health_check", "--help"],
        env=worker_env("redis://127.0.0.1:1/0"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


# --- tasks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "personal_assistant.workers.tasks.ai_tasks",
        "personal_assistant.workers.tasks.email_tasks",
        "personal_assistant.workers.tasks.file_tasks",
        "personal_assistant.workers.tasks.sync_tasks",
        "personal_assistant.workers.tasks.maintenance_tasks",
    ],
)
def test_each_domain_tasks_module_imports_and_registers_its_tasks_on_the_app(path: str) -> None:
    module = seed(path)
    app = seed("personal_assistant.workers.celery_app").app

    assert module.__name__ == path
    assert any(name.startswith(f"{path}.") for name in app.tasks)


@pytest.mark.parametrize("name", SEED_BEAT_TASKS)
def test_the_seeds_beat_tasks_are_registered_under_their_seed_names(name: str) -> None:
    app = seed("personal_assistant.workers.celery_app").app
    seed(name.rpartition(".")[0])

    assert name in app.tasks
    assert app.tasks[name].name == name
