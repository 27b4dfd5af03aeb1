"""Settings of the domains: the store, the e-mail outbox, calendar feeds and AI jobs.

:class:`DomainSettings` is a base of :class:`~personal_assistant.workers.config.WorkerSettings`,
so each field is one environment variable (``SMTP_HOST``, ``AI_BASE_URL``, ...) read like every
other. Nothing here is required to start: a worker without SMTP settings starts, reports
"email: not configured" in ``/readyz``, and fails a task only when it has an e-mail to send
(:meth:`DomainSettings.missing_settings` says what is missing per domain).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from personal_assistant.workers import constants as c
from personal_assistant.workers.config.urls import is_loopback_host

SmtpSecurity = Literal["starttls", "ssl", "none"]

DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")
"""Stores the package supports: SQLite (the default, embedded) and PostgreSQL (production)."""

DATABASE_FILE = "assistant.db"
"""The default store's file under DATA_DIR."""


def _feed_pairs(value: Any) -> Any:
    """``name=url,name=url`` (how lists are written in env files) into a mapping."""
    if not isinstance(value, str):
        return value
    feeds: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise ValueError(f"entries are name=url, got {item.split('://')[0][:40]!r}")
        if name.strip() in feeds:
            raise ValueError(f"feed {name.strip()!r} is named twice")
        feeds[name.strip()] = url.strip()
    return feeds


class DomainSettings(BaseSettings):
    """The domain variables (a base of WorkerSettings; never used alone)."""

    # Where the domain data lives: empty means the SQLite file DATA_DIR/assistant.db.
    # PostgreSQL in production: postgresql://user:password@host/db (psycopg 3).
    database_url: str = ""

    # --- e-mail outbox ------------------------------------------------------------------
    smtp_host: str = ""
    # 0: the usual port of SMTP_SECURITY (587 STARTTLS, 465 SSL, 25 none).
    smtp_port: int = Field(default=0, ge=0, le=65535)
    smtp_security: SmtpSecurity = "starttls"
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_timeout: float = Field(default=c.SMTP_TIMEOUT_S, gt=0)
    # The From of every outgoing message (and the domain of its Message-ID).
    email_from: str = ""
    email_batch_size: int = Field(default=c.EMAIL_BATCH_SIZE, ge=1, le=10_000)
    email_lease_seconds: float = Field(default=c.EMAIL_LEASE_S, gt=0)
    email_max_attempts: int = Field(default=c.EMAIL_MAX_ATTEMPTS, ge=1)

    # --- calendar feeds -----------------------------------------------------------------
    # name=url pairs, comma-separated: "work=https://example.com/work.ics,home=...".
    calendar_feeds: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    calendar_max_bytes: int = Field(default=c.CALENDAR_MAX_BYTES, ge=1024)
    calendar_timeout: float = Field(default=c.CALENDAR_TIMEOUT_S, gt=0)

    # --- AI jobs ------------------------------------------------------------------------
    # An OpenAI-compatible API: https://api.openai.com/v1, or a local server's /v1.
    ai_base_url: str = ""
    ai_model: str = ""
    ai_api_key: SecretStr = SecretStr("")
    ai_timeout: float = Field(default=c.AI_TIMEOUT_S, gt=0)
    # The provider's limit for the whole cluster (every worker together); 0: no limit.
    ai_requests_per_minute: int = Field(default=c.AI_REQUESTS_PER_MINUTE, ge=0)
    ai_max_tokens: int = Field(default=c.AI_MAX_TOKENS, ge=1)
    ai_batch_size: int = Field(default=c.AI_BATCH_SIZE, ge=1, le=10_000)
    ai_lease_seconds: float = Field(default=c.AI_LEASE_S, gt=0)

    _feeds = field_validator("calendar_feeds", mode="before")(_feed_pairs)

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        scheme = urlsplit(value).scheme.split("+", 1)[0]
        if scheme not in DATABASE_SCHEMES:
            raise ValueError(
                f"must be a sqlite:/// or postgresql:// URL (got {scheme or 'no'} scheme)"
            )
        return value

    @field_validator("calendar_feeds")
    @classmethod
    def _feed_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            parts = urlsplit(url)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ValueError(f"feed {name!r}: URL must be http(s) with a host")
            if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
                raise ValueError(f"feed name {name[:70]!r}: letters, digits, - and _ only")
        return value

    @field_validator("ai_base_url")
    @classmethod
    def _ai_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value:
            parts = urlsplit(value)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ValueError(
                    "must be an http(s) URL with a host, e.g. https://api.openai.com/v1"
                )
        return value

    @field_validator("smtp_host", "email_from", "smtp_username", "ai_model", mode="after")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _safe_domains(self) -> DomainSettings:
        if self.smtp_username and not self.smtp_password.get_secret_value():
            raise ValueError("SMTP_PASSWORD is required when SMTP_USERNAME is set")
        if self.smtp_username and self.smtp_security == "none":
            raise ValueError(
                "SMTP_USERNAME/SMTP_PASSWORD need SMTP_SECURITY=starttls or ssl: without TLS "
                "the password would go out in clear text"
            )
        if self.email_from and ("@" not in self.email_from or "," in self.email_from):
            raise ValueError("EMAIL_FROM must be one e-mail address")
        if self.ai_base_url and self.ai_api_key.get_secret_value():
            parts = urlsplit(self.ai_base_url)
            if parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
                raise ValueError(
                    "AI_BASE_URL must be https when AI_API_KEY is set (plain http only to a "
                    "loopback host): the key would go out in clear text"
                )
        return self

    # --- derived ------------------------------------------------------------------------
    @property
    def store_url(self) -> str:
        """DATABASE_URL, else the SQLite file under DATA_DIR (resolved, so it never moves)."""
        if self.database_url:
            return self.database_url
        data_dir: Path = getattr(self, "data_dir", Path("var"))
        return f"sqlite:///{data_dir / DATABASE_FILE}"

    @property
    def effective_smtp_port(self) -> int:
        """SMTP_PORT, else the usual port of SMTP_SECURITY."""
        if self.smtp_port:
            return self.smtp_port
        return {"ssl": 465, "starttls": 587, "none": 25}[self.smtp_security]

    @property
    def ai_model_url(self) -> str:
        """The chat-completions endpoint of AI_BASE_URL."""
        return f"{self.ai_base_url}/chat/completions"

    def missing_settings(self) -> dict[str, list[str]]:
        """Per domain, the variables its work needs and that are not set (empty: ready)."""
        missing: dict[str, list[str]] = {}
        needs: dict[str, dict[str, object]] = {
            "email": {"SMTP_HOST": self.smtp_host, "EMAIL_FROM": self.email_from},
            "sync": {"CALENDAR_FEEDS": self.calendar_feeds},
            "ai": {"AI_BASE_URL": self.ai_base_url, "AI_MODEL": self.ai_model},
        }
        for domain, variables in needs.items():
            unset = [name for name, value in variables.items() if not value]
            if unset:
                missing[domain] = unset
        return missing
