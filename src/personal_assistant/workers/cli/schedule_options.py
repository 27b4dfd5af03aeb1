"""``schedule add``'s options and what ``schedule`` reads from them.

The errors every ops command shares (one line, Celery's exit codes) are in cli/ops_command.py;
they are re-exported here for the modules that imported them from here first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from personal_assistant.workers.schedulers.beat_entry import MISFIRE_POLICIES, EntryError
from personal_assistant.workers.schedulers.beat_window import EXAMPLE as WINDOW_EXAMPLE
from personal_assistant.workers.workflows.definition import (
    WorkflowValidationError,
    load_definition_file,
)

__all__ = ["add_options", "entry_data"]

F = TypeVar("F", bound=Callable[..., Any])


def add_options(command: F) -> F:
    """The options of ``schedule add`` (each maps to a field of beat_entry.BeatEntry)."""
    options = [
        click.option("--task", help="The task to send (its full name)."),
        click.option(
            "--workflow",
            "workflow_file",
            type=click.Path(dir_okay=False),
            help="A workflow definition file (YAML or JSON) to submit instead of a task.",
        ),
        click.option("--cron", help="Five cron fields, e.g. '0 3 * * *' (in --timezone)."),
        click.option("--timezone", help="The IANA zone of --cron [default: UTC]."),
        click.option("--every", type=float, help="An interval in seconds, instead of --cron."),
        click.option("--queue", help="Send to this queue instead of the task's own."),
        click.option("--priority", type=click.IntRange(0, 10), help="0..10, 10 = high."),
        click.option("--args", "args_json", help="Positional arguments, a JSON list."),
        click.option("--kwargs", "kwargs_json", help="Keyword arguments, a JSON object."),
        click.option("--expires", type=float, help="A run not started within S seconds is void."),
        click.option("--jitter", type=float, help="Send each run up to S seconds late."),
        click.option("--window", help=f"Run only inside it, e.g. {WINDOW_EXAMPLE!r}."),
        click.option(
            "--no-overlap", is_flag=True, help="Skip a time while the last run is unfinished."
        ),
        click.option(
            "--max-queue-depth",
            type=click.IntRange(0),
            help="Skip a time while the queue holds more messages than this.",
        ),
        click.option(
            "--misfire",
            type=click.Choice(MISFIRE_POLICIES),
            help="A late run: run it once [default], or skip it.",
        ),
        click.option(
            "--misfire-grace", type=float, help="Seconds late before a run is a misfire [60]."
        ),
        click.option("--disabled", is_flag=True, help="Store it disabled (enable it later)."),
        click.option("--replace", is_flag=True, help="Replace an added entry of this name."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _json_option(name: str, flag: str, text: str, kind: type, example: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise EntryError(name, f"{flag} is not JSON ({exc})") from None
    if not isinstance(value, kind):
        raise EntryError(name, f"{flag} must be a JSON {example}, got {type(value).__name__}")
    return value


def _workflow(name: str, path: str) -> dict[str, Any]:
    """The definition in ``path``, read by the bounded loader ``workflow submit`` uses."""
    try:
        return load_definition_file(path)
    except WorkflowValidationError as exc:
        raise EntryError(name, f"invalid workflow file: {'; '.join(exc.problems)}") from None


def entry_data(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The entry's data (beat_entry.entry_from_data's input) from ``add``'s options, or
    EntryError for a combination of options that cannot be an entry."""
    task, workflow_file = options["task"], options["workflow_file"]
    if task is not None and workflow_file is not None:
        raise EntryError(name, "give --task or --workflow, not both")
    if task is None and workflow_file is None:
        raise EntryError(name, "give --task TASK or --workflow FILE")
    if (options["cron"] is None) == (options["every"] is None):
        raise EntryError(name, "give exactly one of --cron EXPR and --every SECONDS")
    if options["timezone"] is not None and options["cron"] is None:
        raise EntryError(name, "--timezone applies to --cron only")
    data: dict[str, Any] = {
        "task": task,
        "cron": options["cron"],
        "interval": options["every"],
        "timezone": options["timezone"],
        "queue": options["queue"],
        "priority": options["priority"],
        "expires": options["expires"],
        "jitter": options["jitter"],
        "window": options["window"],
        "max_queue_depth": options["max_queue_depth"],
        "misfire": options["misfire"],
        "misfire_grace": options["misfire_grace"],
    }
    if options["args_json"] is not None:
        data["args"] = _json_option(name, "--args", options["args_json"], list, "list")
    if options["kwargs_json"] is not None:
        data["kwargs"] = _json_option(name, "--kwargs", options["kwargs_json"], dict, "object")
    if workflow_file is not None:
        data["workflow"] = _workflow(name, workflow_file)
    if options["no_overlap"]:
        data["no_overlap"] = True
    data["enabled"] = not options["disabled"]
    return {key: value for key, value in data.items() if value is not None}
