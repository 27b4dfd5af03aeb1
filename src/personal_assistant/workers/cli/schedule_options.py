"""What the ops commands share beyond cli/terminal.py: their errors; and ``schedule add``'s options.

Every ops command (``pa-status``, ``dlq``, ``alerts``, ``db``, ``schedule``, ``tune``) fails with
one line on stderr, ``Error: ...``, passwords masked, and an exit code as Celery's
(cli/terminal.py):

- 64 (EX_USAGE): bad input the command checks (an option, a file, a name); nothing was done;
- 69 (EX_UNAVAILABLE): Redis, the store or Prometheus did not answer;
- 2: click's own usage errors (an unknown option, a missing argument), as click and Celery's
  built-in commands exit, on one line with where to find the usage instead of the usage text;
- 1: anything else (an unknown id or entry name, a check that found problems).

:class:`OpsGroup` and :class:`OpsCommand` give a command these rules: any Redis connection error
raised inside becomes one :class:`Unavailable` line (so no command prints a traceback because
Redis is down), and click's usage errors one line. :func:`reason` is a driver's error in few
words: redis-py and libpq repeat the host and port that the message names already (as the URL).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, TypeVar

import click
import redis
from kombu.exceptions import OperationalError

from personal_assistant.workers.cli.terminal import CommandFailed, Unavailable, UsageError
from personal_assistant.workers.config import mask_url, state_redis_url
from personal_assistant.workers.schedulers.beat_entry import MISFIRE_POLICIES, EntryError
from personal_assistant.workers.schedulers.beat_window import EXAMPLE as WINDOW_EXAMPLE
from personal_assistant.workers.workflows.definition import (
    WorkflowValidationError,
    load_definition_file,
)

__all__ = [
    "ClickUsage",
    "OpsCommand",
    "OpsGroup",
    "add_options",
    "entry_data",
    "reason",
    "redis_errors",
    "state_url",
    "suggestion",
    "usage_line",
]

# How alike a mistyped name must be to a known one to be suggested (difflib's ratio).
SUGGEST_CUTOFF: Final = 0.7
# Click's exit code for its own usage errors (click.UsageError.exit_code), kept.
EX_CLICK_USAGE: Final = 2
# The prefix redis-py ("Error 111 connecting to 127.0.0.1:6380. ") and psycopg ("connection
# failed: connection to server at "db", port 5432 failed: ") put before the reason: host and
# port again.
_DRIVER_PREFIX = re.compile(
    r"^(?:Error \d+ connecting to [^\s/]+?\.\s+"
    r"|(?:connection failed: )?connection to server at .*?, port \d+ failed:\s*)"
)

F = TypeVar("F", bound=Callable[..., Any])


class ClickUsage(CommandFailed):
    """One of click's own usage errors, on one line: exit 2, as click's."""

    exit_code = EX_CLICK_USAGE


def reason(exc: BaseException) -> str:
    """What went wrong in few words: the error's first line, without the host and port that
    the drivers repeat, passwords masked."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = _DRIVER_PREFIX.sub("", lines[0]) if lines else ""
    return mask_url(text.rstrip(".")) or type(exc).__name__


@contextmanager
def redis_errors(url: str, what: str = "Redis at") -> Iterator[None]:
    """Redis (or the broker, through kombu) not answering inside: one line and exit 69; any
    other Redis error (a read-only replica, out of memory): one line and exit 1."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, OperationalError) as exc:
        raise Unavailable(f"cannot reach {what} {mask_url(url)}: {reason(exc)}") from None
    except redis.RedisError as exc:
        raise CommandFailed(f"{what} {mask_url(url)}: {reason(exc)}") from None


def state_url(ctx: click.Context) -> str:
    """The Redis the command reads (the broker's, else the result backend's), or '' when the
    app is not there yet (click parsing, ``--help``)."""
    app = getattr(ctx.find_root().obj, "app", None)
    if app is None:
        return ""
    return state_redis_url(str(app.conf.broker_url), str(app.conf.result_backend))


def usage_line(exc: click.UsageError) -> ClickUsage:
    """Click's usage error as one line naming where the usage is."""
    where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return ClickUsage(exc.format_message().rstrip(".") + where)


class OpsCommand(click.Command):
    """A command of the ops CLI: click's usage errors, Redis not answering and a usage error
    raised by the command itself (64) are each one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse, a usage error turned into one line (exit 2)."""
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise self.usage_error(exc) from None

    def usage_error(self, exc: click.UsageError) -> CommandFailed:
        """The one-line error for click's usage error ``exc`` (a command may name more)."""
        return usage_line(exc)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command, its Redis errors and its own usage errors one line each."""
        try:
            with redis_errors(state_url(ctx)):
                return super().invoke(ctx)
        except click.UsageError as exc:  # raised by the command's code: its own check
            raise UsageError(exc.format_message()) from None


class OpsGroup(click.Group):
    """A group of the ops CLI: its sub-commands are :class:`OpsCommand` (unless they say)."""

    command_class = OpsCommand

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse, a usage error turned into one line (exit 2)."""
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise usage_line(exc) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """The sub-command, an unknown one as one line (exit 2)."""
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise usage_line(exc) from None


def suggestion(name: str, known: Collection[str]) -> str:
    """`` (did you mean 'x'?)`` for the known name closest to ``name``, or nothing."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=SUGGEST_CUTOFF)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
