"""The settings of every worker, beat and CLI process: :class:`WorkerSettings`, validated.

Every variable of the compose files is a field, read from the environment and from ``.env``
alike (arguments win over both, the environment over ``.env``); the flat ``ALERT_*`` variables
fill ``alert_channels`` (alert_channels.py). :func:`load_settings` turns a bad value into one
:class:`ConfigError` line naming the variable; :func:`get_settings` reads them once per process.
URLs with passwords are masked wherever settings are printed (``repr``, ``safe_dict``, rich).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from personal_assistant.workers import constants as c
from personal_assistant.workers.config.alert_channels import (
    ALERT_VARIABLE_GROUPS,
    AlertChannelSettings,
    AlertVariables,
)
from personal_assistant.workers.config.domain_settings import DomainSettings
from personal_assistant.workers.config.errors import config_error
from personal_assistant.workers.config.masking import mask_url
from personal_assistant.workers.config.production import production_problems
from personal_assistant.workers.config.urls import (
    BACKEND_SCHEMES,
    BROKER_SCHEMES,
    check_celery_url,
    is_redis_url,
)

Environment = Literal["development", "test", "staging", "production"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _split_csv(value: Any) -> Any:
    """Accept ``a,b`` (how people write lists in env files) as well as a real list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class WorkerSettings(DomainSettings):
    """Settings of every worker, beat and CLI process, from the environment and ``.env``.

    The domains' variables (store, SMTP, calendar feeds, AI) are the fields of its base,
    DomainSettings (domain_settings.py)."""

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
    # The pool: prefork (CPU-bound or unsafe code: a process per slot), threads (I/O-bound work
    # that releases the GIL: model and HTTP calls, SMTP), solo (one task at a time, debugging).
    worker_pool: Literal["prefork", "threads", "solo"] = "prefork"
    # Messages reserved per pool slot. 1: a long task never holds others hostage behind it.
    worker_prefetch_multiplier: int = Field(default=1, ge=1, le=64)
    # Recycle a prefork child whose resident memory passes this (KiB) after a task; 0: never.
    worker_max_memory_per_child: int = Field(default=0, ge=0)

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
    # Celery's STARTED state for every task: one result-backend write per task (about a quarter
    # of no-op throughput, measured). Off by default: workflow tasks, whose "running" state
    # ``workflow status`` reads, store it anyway (workflows/hook.py); nothing else reads it.
    task_track_started: bool = False
    alerting_enabled: bool = False
    # YAML rules (see README); empty: the built-in rules.
    alert_rules_file: Path | None = None
    # How often alert windows are re-evaluated without a task event (resolves, backlog, offline).
    alert_eval_interval: float = Field(default=c.ALERT_EVAL_INTERVAL_S, gt=0)
    # Where alerts go: ALERT_SMTP_*, ALERT_SLACK_WEBHOOK_URL, ALERT_WEBHOOK_URL/SECRET,
    # ALERT_ALERTMANAGER_*, ALERT_CHANNEL_TIMEOUT (flat names, read by AlertVariables; see
    # AlertChannelSettings).
    alert_channels: AlertChannelSettings = Field(default_factory=AlertChannelSettings)
    scheduler_enabled: bool = True
    # Beat: the lock's time to live. A standby beat takes over at most this long (plus one of
    # its ticks) after the active one dies; the holder renews every third of it.
    beat_lock_timeout: float = Field(default=c.BEAT_LOCK_TIMEOUT_S, ge=1, le=3600)
    # Where beat serves /metrics (its entries, runs, skips and the lock holder); 0: not served.
    # Not METRICS_PORT: an embedded beat (`make run`) shares the worker's host.
    beat_metrics_port: int = Field(default=c.BEAT_METRICS_PORT, ge=0, le=65535)

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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """pydantic-settings' sources in its order (arguments, environment, ``.env``, secrets
        directory), each environment source followed by its flat ALERT_* variables."""
        return (
            init_settings,
            AlertVariables(settings_cls, env_settings),
            env_settings,
            AlertVariables(settings_cls, dotenv_settings),
            dotenv_settings,
            file_secret_settings,
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
        return check_celery_url(value, BROKER_SCHEMES, "broker")

    @field_validator("celery_result_backend")
    @classmethod
    def _valid_backend(cls, value: str) -> str:
        return check_celery_url(value, BACKEND_SCHEMES, "result backend") if value else value

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
        self._check_production()
        longest = max(self.task_time_limit, self.max_countdown, self.retry_backoff_max)
        if self.visibility_timeout and self.visibility_timeout <= longest:
            raise ValueError(
                f"VISIBILITY_TIMEOUT ({self.visibility_timeout}s) must exceed the task time limit, "
                f"the longest countdown and the longest retry delay ({longest:g}s), "
                "or Redis delivers those messages twice"
            )
        return self

    def _check_production(self) -> None:
        """ENVIRONMENT=production: one line naming everything production.py requires."""
        if self.environment != "production":
            return
        channels = self.alert_channels

        def secret(value: SecretStr | None) -> str:
            return value.get_secret_value() if value is not None else ""

        problems = production_problems(
            urls={
                "CELERY_BROKER_URL": self.celery_broker_url,
                "CELERY_RESULT_BACKEND": self.celery_result_backend,
                "DATABASE_URL": self.database_url,
            },
            secrets={
                "SMTP_PASSWORD": secret(self.smtp_password),
                "AI_API_KEY": secret(self.ai_api_key),
                "ALERT_SMTP_PASSWORD": secret(channels.smtp_password),
                "ALERT_WEBHOOK_SECRET": secret(channels.webhook_secret),
            },
            debug=self.debug,
        )
        if problems:
            raise ValueError("ENVIRONMENT=production needs " + "; ".join(problems))

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
        data["alert_channels"] = self.alert_channels.safe_dict()
        return {k: mask_url(v) if isinstance(v, str) else v for k, v in data.items()}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.safe_dict().items())
        return f"WorkerSettings({fields})"

    __str__ = __repr__

    def __rich_repr__(self) -> Iterator[tuple[str, Any]]:
        """What rich's pretty printer shows: the masked settings (pydantic's would not mask)."""
        yield from self.safe_dict().items()


def load_settings(**overrides: Any) -> WorkerSettings:
    """Read and validate the settings; raise ConfigError with one line per bad variable.

    ``overrides`` are fields (``alert_channels`` takes an AlertChannelSettings or a dict of its
    fields) and pydantic-settings' options, such as ``_env_file``.
    """
    try:
        return WorkerSettings(**overrides)
    except ValidationError as exc:
        raise config_error(exc, groups=ALERT_VARIABLE_GROUPS) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> WorkerSettings:
    """The process-wide settings, read once (``get_settings.cache_clear()`` re-reads)."""
    return load_settings()
