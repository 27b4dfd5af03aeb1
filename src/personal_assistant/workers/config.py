"""The one place the environment is read: every variable of the compose files, validated.

Variables come from the environment and from ``.env`` alike (the environment wins). A bad value
stops start-up with one message that names the variable; URLs with passwords are masked
wherever settings are printed or logged (``repr``, ``safe_dict`` and the log filter).

Where alerts go (``WorkerSettings.alert_channels``, an :class:`AlertChannelSettings`), read
from flat ``ALERT_*`` names::

    ALERT_SMTP_HOST, ALERT_SMTP_PORT (25; 587 with STARTTLS; 465 with SSL), ALERT_SMTP_FROM,
    ALERT_SMTP_TO (comma list), ALERT_SMTP_USER + ALERT_SMTP_PASSWORD (both or neither),
    ALERT_SMTP_STARTTLS / ALERT_SMTP_SSL (true/false, not both), ALERT_SLACK_WEBHOOK_URL,
    ALERT_WEBHOOK_URL + ALERT_WEBHOOK_SECRET (both or neither; the secret >= 32 bytes),
    ALERT_CHANNEL_TIMEOUT (seconds, default 5)

An SMTP login without STARTTLS or SSL is refused (the password would cross the network in
clear text), and so is a Slack or webhook URL that is not https (plain http only to a loopback
host). The password and the webhook secret are ``SecretStr``; webhook URLs (Slack's carries its
token in the path) are shown as scheme and host only (:func:`mask_endpoint`).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from personal_assistant.workers import constants as c

# signing.py imports nothing of this package but constants: no import cycle.
from personal_assistant.workers.alerting.channels.signing import secret_problem

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


def mask_endpoint(url: str) -> str:
    """``scheme://host[:port]/****``: what may be shown of a URL whose path is a credential."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return MASK
    if not parts.scheme or not host:
        return MASK
    if ":" in host:
        host = f"[{host}]"
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment or parts.username
    return f"{parts.scheme}://{host}{port}" + (f"/{MASK}" if hidden else "")


def _is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): where plain http may go."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_http_url(url: str, what: str) -> str:
    """An https URL (http to loopback only) with a host and nothing that could break the
    request line; the ValueError shows the URL masked (an alert body names failing tasks and
    their errors, and a Slack URL is itself a credential)."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"{what}: no URL given")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ValueError(f"{what}: URL {mask_endpoint(url)} contains whitespace or controls")
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise ValueError(f"{what}: unparseable URL {mask_endpoint(url)}") from None
    if parts.scheme not in {"http", "https"}:
        raise ValueError(f"{what}: URL must be https (got {parts.scheme or 'none'!r})")
    if not parts.hostname:
        raise ValueError(f"{what}: URL {mask_endpoint(url)} has no host")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(
            f"{what}: URL {mask_endpoint(url)} must be https (plain http only to a loopback host)"
        )
    return url


# --- Alert channels (ALERT_*) ----------------------------------------------------------------

#: The alert channels' variables are this prefix + the field name of AlertChannelSettings.
ALERT_ENV_PREFIX: Final = "ALERT_"
#: Seconds one send to a channel may take: long enough for a slow SMTP relay, short enough
#: that a dead endpoint does not hold a sender thread for long.
ALERT_CHANNEL_TIMEOUT_S: Final = 5.0
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
# Never echoed in an error: secrets, and URLs whose path may be a credential (their checks show
# them masked).
_UNSHOWN_ALERT_FIELDS = frozenset(
    {"smtp_password", "webhook_secret", "slack_webhook_url", "webhook_url"}
)


def _check_addresses(addresses: tuple[str, ...]) -> None:
    """Refuse what cannot go in a From or To header (the error shows the variable's value)."""
    for address in addresses:
        if "@" not in address or "," in address or any(ch.isspace() for ch in address):
            raise ValueError("must hold e-mail addresses")


class AlertChannelSettings(BaseModel):
    """Where alerts go: e-mail, Slack, a signed webhook (each optional; the log always).

    Each field is read from ``ALERT_`` + its name in upper case (``smtp_host`` from
    ALERT_SMTP_HOST); a blank value is an unset one. Every check runs when the settings load,
    so a channel configured in part stops start-up with one line naming the variable.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    smtp_host: str | None = None
    # None: the usual port of the TLS mode (email_port).
    smtp_port: int | None = None
    smtp_from: str | None = None
    smtp_to: tuple[str, ...] = ()
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    slack_webhook_url: str | None = None
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    channel_timeout: float = ALERT_CHANNEL_TIMEOUT_S

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of ``field`` (``smtp_host`` -> ``ALERT_SMTP_HOST``)."""
        return ALERT_ENV_PREFIX + field.upper()

    @classmethod
    def from_variables(cls, variables: Mapping[str, str | None]) -> AlertChannelSettings:
        """The settings held by ``variables`` (an environment: ``ALERT_SMTP_HOST``, ...);
        ConfigError, naming the variable, when a value is bad."""
        try:
            return cls.model_validate(_alert_values(variables))
        except ValidationError as exc:
            raise _config_error(exc, within=("alert_channels",)) from None

    @field_validator("smtp_host", "smtp_from", "smtp_user", "slack_webhook_url", "webhook_url",
                     mode="before")  # fmt: skip
    @classmethod
    def _blank_text_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("smtp_password", "webhook_secret", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: Any) -> Any:
        # Kept as given otherwise: spaces may be part of a password.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("smtp_port", mode="before")
    @classmethod
    def _port_number(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            if not (value.isascii() and value.isdigit()):
                raise ValueError("must be a port number 1-65535")
            value = int(value)
        if isinstance(value, int) and not 0 < value < 65536:
            raise ValueError("must be a port number 1-65535")
        return value

    @field_validator("smtp_starttls", "smtp_ssl", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        word = value.strip().lower()
        if not word or word in _FALSE:
            return False
        if word in _TRUE:
            return True
        raise ValueError("must be true or false")

    @field_validator("smtp_to", mode="before")
    @classmethod
    def _address_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(r for r in (part.strip() for part in value.split(",")) if r)
        return value

    @field_validator("channel_timeout", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return ALERT_CHANNEL_TIMEOUT_S
            try:
                value = float(value)
            except ValueError:
                raise ValueError("must be a number of seconds") from None
        if isinstance(value, int | float) and not (math.isfinite(value) and value > 0):
            raise ValueError("must be a positive number of seconds")
        return value

    @field_validator("smtp_host")
    @classmethod
    def _host_name(cls, value: str | None) -> str | None:
        if value is not None and any(ch.isspace() for ch in value):
            raise ValueError("must be a host name")
        return value

    @field_validator("smtp_from")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        _check_addresses(() if value is None else (value,))
        return value

    @field_validator("smtp_to")
    @classmethod
    def _recipients(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _check_addresses(value)
        return value

    @field_validator("slack_webhook_url")
    @classmethod
    def _slack_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value, "Slack webhook")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value, "webhook")

    @field_validator("webhook_secret")
    @classmethod
    def _signing_secret(cls, value: SecretStr | None) -> SecretStr | None:
        problem = None if value is None else secret_problem(value.get_secret_value())
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _complete_channels(self) -> AlertChannelSettings:
        # The messages name the variables themselves: several are involved in each.
        v = self.variable
        smtp = [f for f in type(self).model_fields if f.startswith("smtp_") and getattr(self, f)]
        if smtp:
            because = f"for e-mail alerts (set: {', '.join(v(f) for f in smtp)})"
            for field in ("smtp_host", "smtp_from", "smtp_to"):
                if not getattr(self, field):
                    raise ValueError(f"{v(field)} is required {because}")
        if self.smtp_starttls and self.smtp_ssl:
            raise ValueError(
                f"{v('smtp_starttls')} and {v('smtp_ssl')} exclude each other: pick one"
            )
        if self.smtp_user and not self.smtp_password:
            raise ValueError(f"{v('smtp_password')} is required when {v('smtp_user')} is set")
        if self.smtp_password and not self.smtp_user:
            raise ValueError(f"{v('smtp_user')} is required when {v('smtp_password')} is set")
        if self.smtp_user and not (self.smtp_starttls or self.smtp_ssl):
            raise ValueError(
                f"{v('smtp_user')}/{v('smtp_password')} need {v('smtp_starttls')}=true or"
                f" {v('smtp_ssl')}=true: without TLS the password would go out in clear text"
            )
        if self.webhook_url and not self.webhook_secret:
            raise ValueError(f"{v('webhook_secret')} is required when {v('webhook_url')} is set")
        if self.webhook_secret and not self.webhook_url:
            raise ValueError(f"{v('webhook_url')} is required when {v('webhook_secret')} is set")
        return self

    @property
    def email_port(self) -> int:
        """ALERT_SMTP_PORT, else the usual port of the TLS mode: 465 SSL, 587 STARTTLS, 25."""
        if self.smtp_port is not None:
            return self.smtp_port
        return 465 if self.smtp_ssl else 587 if self.smtp_starttls else 25

    def safe_dict(self) -> dict[str, Any]:
        """Every field, secrets as ``**********`` and webhook URLs as scheme and host."""
        data = self.model_dump(mode="json")
        for field in ("slack_webhook_url", "webhook_url"):
            if data[field]:
                data[field] = mask_endpoint(data[field])
        return data

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.safe_dict().items())
        return f"AlertChannelSettings({fields})"

    __str__ = __repr__

    def __rich_repr__(self) -> Iterator[tuple[str, Any]]:
        """What rich's pretty printer shows: the masked settings (pydantic's would not mask)."""
        yield from self.safe_dict().items()


def _alert_values(variables: Mapping[str, str | None]) -> dict[str, str]:
    """The AlertChannelSettings fields found in ``variables`` (names in any case)."""
    lowered = {name.lower(): value for name, value in variables.items()}
    prefix = ALERT_ENV_PREFIX.lower()
    found = {field: lowered.get(prefix + field) for field in AlertChannelSettings.model_fields}
    return {field: value for field, value in found.items() if value is not None}


class _AlertVariables(PydanticBaseSettingsSource):
    """The flat ALERT_* variables of one source, as the nested ``alert_channels`` value.

    pydantic-settings would read a nested model from ALERT_CHANNELS__SMTP_HOST; this keeps the
    names operators already use, from the environment and from ``.env`` alike.
    """

    def __init__(self, settings_cls: type[BaseSettings], source: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        # EnvSettingsSource (and DotEnvSettingsSource, its subclass, with the .env files the
        # caller chose) holds every variable it read, names in lower case.
        self._variables = source.env_vars if isinstance(source, EnvSettingsSource) else {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: ``__call__`` reads the whole group at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values = _alert_values(self._variables)
        return {"alert_channels": values} if values else {}


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
    # Where alerts go: ALERT_SMTP_*, ALERT_SLACK_WEBHOOK_URL, ALERT_WEBHOOK_URL/SECRET,
    # ALERT_CHANNEL_TIMEOUT (flat names, read by _AlertVariables; see AlertChannelSettings).
    alert_channels: AlertChannelSettings = Field(default_factory=AlertChannelSettings)
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
            _AlertVariables(settings_cls, env_settings),
            env_settings,
            _AlertVariables(settings_cls, dotenv_settings),
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
        data["alert_channels"] = self.alert_channels.safe_dict()
        return {k: mask_url(v) if isinstance(v, str) else v for k, v in data.items()}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.safe_dict().items())
        return f"WorkerSettings({fields})"

    __str__ = __repr__

    def __rich_repr__(self) -> Iterator[tuple[str, Any]]:
        """What rich's pretty printer shows: the masked settings (pydantic's would not mask)."""
        yield from self.safe_dict().items()


def _describe(error: Mapping[str, Any]) -> str:
    """Turn one pydantic error into 'VARIABLE: reason (got 'value')'.

    An error of no single field (a model validator's) is its reason alone: those reasons name
    their variables themselves.
    """
    loc = [str(part) for part in error.get("loc", ())]
    reason = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    prefix, unshown = "", frozenset[str]()
    if loc[:1] == ["alert_channels"]:
        loc, prefix, unshown = loc[1:], ALERT_ENV_PREFIX, _UNSHOWN_ALERT_FIELDS
    if not loc:
        return reason
    got = error.get("input")
    hidden = loc[0] in unshown or isinstance(got, dict)
    shown = "" if hidden else f" (got {mask_url(str(got))!r})"
    return f"{prefix}{loc[0].upper()}: {reason}{shown}"


def _config_error(exc: ValidationError, *, within: tuple[str, ...] = ()) -> ConfigError:
    """One ConfigError for all of ``exc``: one line per error, each naming its variable."""
    lines = [_describe({**err, "loc": (*within, *err["loc"])}) for err in exc.errors()]
    return ConfigError("invalid configuration: " + "; ".join(lines))


def load_settings(**overrides: Any) -> WorkerSettings:
    """Read and validate the settings; raise ConfigError with one line per bad variable.

    ``overrides`` are fields (``alert_channels`` takes an AlertChannelSettings or a dict of its
    fields) and pydantic-settings' options, such as ``_env_file``.
    """
    try:
        return WorkerSettings(**overrides)
    except ValidationError as exc:
        raise _config_error(exc) from None


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
