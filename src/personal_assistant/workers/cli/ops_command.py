"""The ops commands' click classes: one-line errors with Celery's exit codes.

Every ops command (``pa-status``, ``dlq``, ``alerts``, ``db``, ``schedule``, ``tune``,
``workflow``) fails with one line on stderr, ``Error: ...``, passwords masked, and an exit code
as Celery's (cli/terminal.py):

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
import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any, Final

import click
import redis
from kombu.exceptions import OperationalError

from personal_assistant.workers.cli.terminal import CommandFailed, Unavailable, UsageError
from personal_assistant.workers.config import mask_url, state_redis_url

__all__ = [
    "ClickUsage",
    "OpsCommand",
    "OpsGroup",
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
