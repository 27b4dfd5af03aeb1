"""Alert channels configured from the environment: :func:`channels_from_env`.

The variables::

    ALERT_SMTP_HOST, ALERT_SMTP_PORT (25; 587 with STARTTLS; 465 with SSL), ALERT_SMTP_FROM,
    ALERT_SMTP_TO (comma list), ALERT_SMTP_USER + ALERT_SMTP_PASSWORD (both or neither),
    ALERT_SMTP_STARTTLS / ALERT_SMTP_SSL (true/false), ALERT_SLACK_WEBHOOK_URL,
    ALERT_WEBHOOK_URL + ALERT_WEBHOOK_SECRET, ALERT_CHANNEL_TIMEOUT (seconds, default 5)

Refused at start-up, each with one line naming the variables: an SMTP login
(ALERT_SMTP_USER/PASSWORD) without ALERT_SMTP_STARTTLS or ALERT_SMTP_SSL, since the password
would cross the network in clear text; a Slack or webhook URL that is not https (plain http
only to a loopback host); an ALERT_WEBHOOK_SECRET shorter than 32 bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from personal_assistant.workers.alerting.channels.base import DEFAULT_TIMEOUT_S, Channel
from personal_assistant.workers.alerting.channels.email import EmailChannel
from personal_assistant.workers.alerting.channels.signing import secret_problem
from personal_assistant.workers.config import ConfigError

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _env(env: Mapping[str, str], key: str) -> str:
    return (env.get(key) or "").strip()


def _flag(env: Mapping[str, str], key: str) -> bool:
    value = _env(env, key).lower()
    if not value or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise ConfigError(f"{key} must be true or false (got {value!r})")


def _positive_float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = _env(env, key)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a number of seconds (got {raw!r})") from None
    if not value > 0:
        raise ConfigError(f"{key} must be positive (got {raw!r})")
    return value


def _require(env: Mapping[str, str], key: str, because: str) -> str:
    value = _env(env, key)
    if not value:
        raise ConfigError(f"{key} is required {because}")
    return value


def _smtp_from_env(env: Mapping[str, str], timeout: float) -> EmailChannel | None:
    keys = ("HOST", "PORT", "USER", "PASSWORD", "FROM", "TO", "STARTTLS", "SSL")
    given = [f"ALERT_SMTP_{k}" for k in keys if _env(env, f"ALERT_SMTP_{k}")]
    if not given:
        return None
    because = f"for e-mail alerts (set: {', '.join(given)})"
    host = _require(env, "ALERT_SMTP_HOST", because)
    sender = _require(env, "ALERT_SMTP_FROM", because)
    recipients = [r.strip() for r in _require(env, "ALERT_SMTP_TO", because).split(",")]
    recipients = [r for r in recipients if r]
    if not recipients:
        raise ConfigError(f"ALERT_SMTP_TO is required {because}")
    starttls = _flag(env, "ALERT_SMTP_STARTTLS")
    use_ssl = _flag(env, "ALERT_SMTP_SSL")
    if starttls and use_ssl:
        raise ConfigError("ALERT_SMTP_STARTTLS and ALERT_SMTP_SSL exclude each other: pick one")
    raw_port = _env(env, "ALERT_SMTP_PORT")
    port = 465 if use_ssl else 587 if starttls else 25
    if raw_port:
        if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
            raise ConfigError(f"ALERT_SMTP_PORT must be a port number 1-65535 (got {raw_port!r})")
        port = int(raw_port)
    user, password = _env(env, "ALERT_SMTP_USER"), env.get("ALERT_SMTP_PASSWORD") or ""
    if user and not password:
        raise ConfigError("ALERT_SMTP_PASSWORD is required when ALERT_SMTP_USER is set")
    if password and not user:
        raise ConfigError("ALERT_SMTP_USER is required when ALERT_SMTP_PASSWORD is set")
    if user and not (starttls or use_ssl):
        raise ConfigError(
            "ALERT_SMTP_USER/ALERT_SMTP_PASSWORD need ALERT_SMTP_STARTTLS=true or"
            " ALERT_SMTP_SSL=true: without TLS the password would go out in clear text"
        )
    for key, value in (("ALERT_SMTP_FROM", sender), *(("ALERT_SMTP_TO", r) for r in recipients)):
        if "@" not in value or any(ch.isspace() for ch in value):
            raise ConfigError(f"{key} must hold e-mail addresses (got {value!r})")
    try:
        return EmailChannel(
            host,
            port,
            sender,
            recipients,
            username=user or None,
            password=password or None,
            starttls=starttls,
            use_ssl=use_ssl,
            timeout=timeout,
        )
    except ValueError as exc:  # the messages above name the variable; this is the backstop
        raise ConfigError(f"ALERT_SMTP_*: {exc}") from None


def _url_channel(
    env: Mapping[str, str], key: str, build: Callable[[str], Channel]
) -> Channel | None:
    url = _env(env, key)
    if not url:
        return None
    try:
        return build(url)
    except ValueError as exc:  # messages show the URL masked (mask_endpoint)
        raise ConfigError(f"{key}: {exc}") from None


def channels_from_env(env: Mapping[str, str]) -> dict[str, Channel]:
    """The configured channels by name (``log`` always; ``email``, ``slack``, ``webhook``).

    A channel configured in part raises :class:`ConfigError` (a ValueError) naming the missing or
    invalid variable; no message contains a password, secret or webhook path.
    """
    # Imported here, not at the top: alert_channels imports this module at its top (to re-export
    # channels_from_env), so a top-level import would make the two modules import each other.
    from personal_assistant.workers.alerting.channels.webhooks import (  # noqa: PLC0415
        LogChannel,
        SlackChannel,
        WebhookChannel,
    )

    timeout = _positive_float(env, "ALERT_CHANNEL_TIMEOUT", DEFAULT_TIMEOUT_S)
    channels: dict[str, Channel] = {"log": LogChannel()}
    email = _smtp_from_env(env, timeout)
    if email is not None:
        channels["email"] = email
    slack = _url_channel(
        env, "ALERT_SLACK_WEBHOOK_URL", lambda url: SlackChannel(url, timeout=timeout)
    )
    if slack is not None:
        channels["slack"] = slack
    secret = env.get("ALERT_WEBHOOK_SECRET") or ""
    if _env(env, "ALERT_WEBHOOK_URL"):
        if not secret.strip():
            raise ConfigError("ALERT_WEBHOOK_SECRET is required when ALERT_WEBHOOK_URL is set")
        problem = secret_problem(secret)
        if problem is not None:
            raise ConfigError(f"ALERT_WEBHOOK_SECRET: {problem}")
        webhook = _url_channel(
            env, "ALERT_WEBHOOK_URL", lambda url: WebhookChannel(url, secret, timeout=timeout)
        )
        if webhook is not None:
            channels["webhook"] = webhook
    elif secret.strip():
        raise ConfigError("ALERT_WEBHOOK_URL is required when ALERT_WEBHOOK_SECRET is set")
    return channels
