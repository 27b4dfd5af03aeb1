"""The one place the environment is read: every variable of the compose files, validated.

A bad value stops start-up with one message that names the variable; URLs with passwords are
masked wherever settings are printed or logged (``repr``, ``safe_dict`` and the log filter).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from personal_assistant.workers import constants as c

Environment = Literal["development", "test", "staging", "production"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

BROKER_SCHEMES = frozenset({"redis", "rediss", "amqp", "amqps", "pyamqp", "memory"})
BACKEND_SCHEMES = frozenset(
    {"redis", "rediss", "rpc", "db+postgresql", "db+sqlite", "cache+memory"}
)
# A scheme at the start of a word ("redis://", "db+postgresql://"): the lookbehind keeps the
# scan linear on long runs of letters (one attempt per word, not one per character).
_SCHEME = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://")
_WHITESPACE = re.compile(r"\s")
# `password=`, `pass=`, `pwd=` (also `redis_password=`, any case), in a query string or a log
# line: the value runs to the next '&', '#' or space. Not `bypass=` or `compass=`.
_SECRET_PARAMETER = re.compile(r"(?i)(?<![A-Za-z0-9])((?:password|pass|pwd)=)[^&#\s]+")
MASK = "****"


class ConfigError(ValueError):
    """The environment holds a value the workers cannot start with; the message names it."""


def mask_url(url: str) -> str:
    """Return ``url`` (or any text holding URLs) with every password replaced by ``****``.

    The password is the whole userinfo after the first ':', up to the *last* '@' before the
    next space or URL, so one holding '/', '?', ':' or '@' is masked whole, even where urllib
    would split it elsewhere; ``password=``/``pass=``/``pwd=`` parameters are masked too. User
    and host stay readable. An '@' later in a URL without a password (``?to=a@b``) is taken as
    the end of a userinfo and hides the host: the mask errs towards hiding.
    """
    if "://" in url:
        url = _mask_userinfo(url)
    return _SECRET_PARAMETER.sub(lambda m: f"{m[1]}{MASK}", url)


def _mask_userinfo(text: str) -> str:
    """Mask the password of each ``scheme://user:password@`` in ``text`` (see mask_url)."""
    schemes = list(_SCHEME.finditer(text))
    pieces: list[str] = []
    done = 0
    for index, scheme in enumerate(schemes):
        start = scheme.end()
        end = schemes[index + 1].start() if index + 1 < len(schemes) else len(text)
        space = _WHITESPACE.search(text, start, end)
        end = space.start() if space else end
        at = text.rfind("@", start, end)
        colon = text.find(":", start, at) if at >= 0 else -1
        if colon < 0:
            continue  # no userinfo, or a user without a password
        pieces += [text[done : colon + 1], MASK]
        done = at
    return "".join(pieces) + text[done:] if pieces else text


REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(url: str) -> bool:
    """True for a Redis URL (TCP, TLS or a unix socket), the kind redis-py opens."""
    return url.startswith(REDIS_URL_SCHEMES)


def state_redis_url(broker_url: str, backend_url: str) -> str:
    """Where the project keeps its own state (dead letters, workflows): the broker's Redis,
    else the result backend's. One rule, so every component finds the same database."""
    return broker_url if is_redis_url(broker_url) else backend_url


def _check_url(url: str, allowed: frozenset[str], what: str) -> str:
    """Parse a broker/backend URL far enough to catch typos before Celery hides them.

    urllib's own messages are not repeated: they quote parts of the authority, where a
    password holding '/' or '@' ends up (``Port could not be cast ... 'pa'``).
    """

    def refuse(reason: str) -> ValueError:
        return ValueError(f"unparseable {what} URL {mask_url(url)!r}: {reason}")

    try:
        parts = urlsplit(url)
    except ValueError:
        raise refuse("malformed host part") from None
    scheme = parts.scheme
    if scheme not in allowed:
        raise refuse(f"unknown scheme {scheme!r}; use one of {sorted(allowed)}")
    needs_host = scheme not in {"memory", "rpc", "cache+memory", "db+sqlite"}
    try:
        host, _ = parts.hostname, parts.port
    except ValueError:
        raise refuse("the port must be a number from 0 to 65535") from None
    if needs_host and not host:
        raise refuse("no host in the URL")
    database = parts.path.strip("/")
    if scheme in {"redis", "rediss"} and database and not database.isdigit():
        raise refuse("the database must be a number")
    return url  # as given: re-joining the parts would drop the '//' of host-less URLs


def _split_csv(value: Any) -> Any:
    """Accept ``a,b`` (how people write lists in env files) as well as a real list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class WorkerSettings(BaseSettings):
    """Settings of every worker, beat and CLI process, from the environment and ``.env``."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    environment: Environment = "development"
    debug: bool = False
    log_level: LogLevel = "INFO"

    celery_broker_url: str = "redis://localhost:6379/0"
    # Empty means "the broker's Redis": one less thing to configure on a single machine.
    celery_result_backend: str = ""

    worker_queue: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(c.QUEUES))
    worker_concurrency: int = Field(default=2, ge=1, le=256)
    worker_max_tasks_per_child: int = Field(default=1000, ge=1)

    metrics_enabled: bool = True
    metrics_port: int = Field(default=c.METRICS_PORT, ge=0, le=65535)
    # Where /metrics, /healthz and /readyz listen: this machine only by default (`make run`);
    # the containers set 0.0.0.0, on their private network.
    metrics_host: str = Field(default="127.0.0.1", min_length=1)
    # Tasks a workflow may run besides the domain tasks meant for workflows: names or patterns
    # (fnmatch), e.g. "myapp.tasks.*". Celery's built-ins and maintenance tasks never.
    workflow_allowed_tasks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Liveness: a beat every interval; a worker silent for down_after is reported down.
    worker_heartbeat_interval: float = Field(default=c.HEARTBEAT_INTERVAL_S, gt=0)
    worker_down_after: float = Field(default=c.WORKER_DOWN_AFTER_S, gt=0)
    # Celery's STARTED state: one result-backend write per task (about a quarter of no-op
    # throughput, measured), which shows workflow tasks as "running" while they run.
    task_track_started: bool = True
    alerting_enabled: bool = False
    # YAML rules (see README); empty: the built-in rules.
    alert_rules_file: Path | None = None
    # How often alert windows are re-evaluated without a task event (resolves, backlog, offline).
    alert_eval_interval: float = Field(default=c.ALERT_EVAL_INTERVAL_S, gt=0)
    scheduler_enabled: bool = True

    task_time_limit: int = Field(default=c.TASK_TIME_LIMIT_S, ge=1)
    task_soft_time_limit: int = Field(default=c.TASK_SOFT_TIME_LIMIT_S, ge=1)
    max_countdown: int = Field(default=c.MAX_COUNTDOWN_S, ge=0)
    # 0 means "derive it from the time limit and the longest countdown" (constants.py says how).
    visibility_timeout: int = Field(default=0, ge=0)
    # How often workers look for messages of dead workers past the visibility timeout: a scan
    # every interval x throttle seconds (kombu's defaults, 10 x 10). Tests lower both.
    unacked_restore_interval: int = Field(default=10, ge=1)
    unacked_restore_throttle: int = Field(default=10, ge=1)
    # false: kombu's own BRPOP fetch, which can lose a message when a worker dies (kept only
    # to measure the reliable fetch against it; see broker/transport.py).
    broker_reliable_fetch: bool = True
    # Messages larger than this are dead-lettered by the fetch, never handed to a worker.
    broker_max_message_bytes: int = Field(default=c.BROKER_MAX_MESSAGE_BYTES, ge=1024)
    task_max_retries: int = Field(default=c.TASK_MAX_RETRIES, ge=0)
    retry_backoff_base: float = Field(default=c.RETRY_BACKOFF_BASE_S, gt=0)
    retry_backoff_max: float = Field(default=c.RETRY_BACKOFF_MAX_S, gt=0)
    dlq_max_entries: int = Field(default=c.DLQ_MAX_ENTRIES, ge=1)

    data_dir: Path = Path("var")
    temp_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    temp_file_max_age_hours: float = Field(default=c.TEMP_FILE_MAX_AGE_HOURS, ge=0)
    temp_file_patterns: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    log_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    log_max_age_days: float = Field(default=c.LOG_MAX_AGE_DAYS, ge=0)
    log_file_patterns: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*.log", "*.log.*", "*.log.gz"]
    )

    _split = field_validator(
        "worker_queue",
        "workflow_allowed_tasks",
        "temp_dirs",
        "temp_file_patterns",
        "log_dirs",
        "log_file_patterns",
        mode="before",
    )(_split_csv)

    @field_validator("data_dir", "temp_dirs", "log_dirs", "alert_rules_file", mode="after")
    @classmethod
    def _absolute(cls, value: Any) -> Any:
        # A default that works from one directory only is a bug (DESIGN.md section 4): paths are
        # resolved once, against the directory the process starts in, and never move after.
        if isinstance(value, Path):
            return value.expanduser().resolve()
        if isinstance(value, list):
            return [p.expanduser().resolve() if isinstance(p, Path) else p for p in value]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("environment", mode="before")
    @classmethod
    def _lower_environment(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("celery_broker_url")
    @classmethod
    def _valid_broker(cls, value: str) -> str:
        return _check_url(value, BROKER_SCHEMES, "broker")

    @field_validator("celery_result_backend")
    @classmethod
    def _valid_backend(cls, value: str) -> str:
        return _check_url(value, BACKEND_SCHEMES, "result backend") if value else value

    @field_validator("worker_queue")
    @classmethod
    def _known_queues(cls, value: list[str]) -> list[str]:
        unknown = [q for q in value if q not in c.QUEUES]
        if unknown or not value:
            raise ValueError(f"unknown queue(s) {unknown}; known queues are {list(c.QUEUES)}")
        return value

    @model_validator(mode="after")
    def _consistent_limits(self) -> WorkerSettings:
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError(
                "TASK_SOFT_TIME_LIMIT must be below TASK_TIME_LIMIT "
                f"({self.task_soft_time_limit} >= {self.task_time_limit})"
            )
        if self.alerting_enabled and not self.metrics_enabled:
            raise ValueError(
                "ALERTING_ENABLED needs METRICS_ENABLED: alerts are evaluated on the task "
                "events the metrics record"
            )
        if self.worker_down_after <= self.worker_heartbeat_interval:
            raise ValueError(
                "WORKER_DOWN_AFTER must exceed WORKER_HEARTBEAT_INTERVAL "
                f"({self.worker_down_after:g} <= {self.worker_heartbeat_interval:g}), or live "
                "workers flap down between beats"
            )
        longest = max(self.task_time_limit, self.max_countdown, self.retry_backoff_max)
        if self.visibility_timeout and self.visibility_timeout <= longest:
            raise ValueError(
                f"VISIBILITY_TIMEOUT ({self.visibility_timeout}s) must exceed the task time limit, "
                f"the longest countdown and the longest retry delay ({longest:g}s), "
                "or Redis delivers those messages twice"
            )
        return self

    @property
    def result_backend_url(self) -> str:
        """The result backend, defaulting to the broker when it is Redis."""
        if self.celery_result_backend:
            return self.celery_result_backend
        return self.celery_broker_url if is_redis_url(self.celery_broker_url) else "rpc://"

    @property
    def effective_visibility_timeout(self) -> int:
        """Visibility timeout in seconds: the configured one, or 1.2 x the longest wait or run."""
        if self.visibility_timeout:
            return self.visibility_timeout
        return int(max(self.task_time_limit, self.max_countdown, self.retry_backoff_max) * 1.2)

    @property
    def cleanup_temp_roots(self) -> list[Path]:
        """Directories ``cleanup_temp_files`` may clean (TEMP_DIRS, else DATA_DIR/tmp)."""
        return self.temp_dirs or [self.data_dir / "tmp"]

    @property
    def cleanup_log_roots(self) -> list[Path]:
        """Directories ``cleanup_old_logs`` may clean (LOG_DIRS, else DATA_DIR/logs)."""
        return self.log_dirs or [self.data_dir / "logs"]

    def safe_dict(self) -> dict[str, Any]:
        """Every setting, with secrets in URLs masked: what may be printed or logged."""
        data = self.model_dump(mode="json")
        return {k: mask_url(v) if isinstance(v, str) else v for k, v in data.items()}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.safe_dict().items())
        return f"WorkerSettings({fields})"

    __str__ = __repr__

    def __rich_repr__(self) -> Iterator[tuple[str, Any]]:
        """What rich's pretty printer shows: the masked settings (pydantic's would not mask)."""
        yield from self.safe_dict().items()


def _describe(error: dict[str, Any]) -> str:
    """Turn one pydantic error into 'VARIABLE: reason (got 'value')'."""
    loc = [str(part) for part in error.get("loc", ())]
    name = loc[0].upper() if loc else "settings"
    reason = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    got = error.get("input")
    shown = "" if not loc or isinstance(got, dict) else f" (got {mask_url(str(got))!r})"
    return f"{name}: {reason}{shown}"


def load_settings(**overrides: Any) -> WorkerSettings:
    """Read and validate the settings; raise ConfigError with one line per bad variable."""
    try:
        return WorkerSettings(**overrides)
    except ValidationError as exc:
        lines = [_describe(dict(err)) for err in exc.errors()]
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> WorkerSettings:
    """The process-wide settings, read once (``get_settings.cache_clear()`` re-reads)."""
    return load_settings()


# Formats tracebacks exactly as logging.Formatter (and Celery's ColorFormatter) would.
_TRACEBACK_FORMATTER = logging.Formatter()


class MaskSecretsFilter(logging.Filter):
    """Mask passwords in every log record that passes through a handler: the message, the
    traceback (``exc_text``, ``exc_info``) and the stack (``stack_info``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drop a record."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the formatter's to report, not ours
            message = None
        if message is not None:
            masked = mask_url(message)
            if masked != message:
                record.msg, record.args = masked, None
        # The traceback as every formatter prints it: the cached text, else the exception.
        traceback = record.exc_text
        if not traceback and record.exc_info:
            traceback = _TRACEBACK_FORMATTER.formatException(record.exc_info)
        if traceback:
            masked = mask_url(traceback)
            if masked != traceback:
                # Formatters print a cached exc_text as it is. The exception object still
                # holds the secret, so no handler may render it again.
                record.exc_text, record.exc_info = masked, None
        if record.stack_info:
            record.stack_info = mask_url(record.stack_info)
        return True
