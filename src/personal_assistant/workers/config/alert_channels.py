"""Where alerts go: :class:`AlertChannelSettings`, read from flat ``ALERT_*`` variables.

``WorkerSettings.alert_channels`` holds one, filled by :class:`AlertVariables` (a settings
source) from the environment and from ``.env`` alike, under the names operators use::

    ALERT_SMTP_HOST, ALERT_SMTP_PORT (25; 587 with STARTTLS; 465 with SSL), ALERT_SMTP_FROM,
    ALERT_SMTP_TO (comma list), ALERT_SMTP_USER + ALERT_SMTP_PASSWORD (both or neither),
    ALERT_SMTP_STARTTLS / ALERT_SMTP_SSL (true/false, not both), ALERT_SLACK_WEBHOOK_URL,
    ALERT_WEBHOOK_URL + ALERT_WEBHOOK_SECRET (both or neither; the secret >= 32 bytes),
    ALERT_ALERTMANAGER_URL (the base URL, http://alertmanager:9093), optionally with
    ALERT_ALERTMANAGER_USERNAME + ALERT_ALERTMANAGER_PASSWORD (basic auth) or
    ALERT_ALERTMANAGER_TOKEN (bearer), ALERT_ALERTMANAGER_RESOLVE_TIMEOUT (seconds, default 3600),
    ALERT_CHANNEL_TIMEOUT (seconds, default 5)

An SMTP login without STARTTLS or SSL is refused (the password would cross the network in
clear text), and so is a Slack or webhook URL that is not https (plain http only to a loopback
host), and an Alertmanager URL that is plain http to another host when credentials go with it
(without credentials plain http is fine: Alertmanager usually listens on the compose network).
The passwords, the token and the webhook secret are ``SecretStr``; webhook URLs (Slack's
carries its token in the path) are shown as scheme and host only (:func:`mask_endpoint`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

# signing.py imports nothing of this package but constants: no import cycle.
from personal_assistant.workers.alerting.channels.signing import secret_problem
from personal_assistant.workers.config.errors import FlatVariables, config_error
from personal_assistant.workers.config.masking import mask_endpoint, mask_url
from personal_assistant.workers.config.urls import check_http_url, split_http_url

#: The alert channels' variables are this prefix + the field name of AlertChannelSettings.
ALERT_ENV_PREFIX: Final = "ALERT_"
#: Seconds one send to a channel may take: long enough for a slow SMTP relay, short enough
#: that a dead endpoint does not hold a sender thread for long.
ALERT_CHANNEL_TIMEOUT_S: Final = 5.0
#: How long Alertmanager keeps a firing alert we pushed active without hearing from us again
#: (its ``endsAt``): above the rules' cooldown (30 minutes by default), after which a reminder
#: pushes it again, and short enough that an alert whose process is gone clears within the hour.
ALERTMANAGER_RESOLVE_TIMEOUT_S: Final = 3600.0
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
# Never echoed in an error: secrets, and URLs whose path may be a credential (their checks show
# them masked).
_UNSHOWN_ALERT_FIELDS = frozenset(
    {
        "smtp_password",
        "webhook_secret",
        "slack_webhook_url",
        "webhook_url",
        "alertmanager_password",
        "alertmanager_token",
    }
)
# What Alertmanager's v2 API is under the base URL; a URL given with it is taken as the base.
ALERTMANAGER_ALERTS_PATH: Final = "/api/v2/alerts"

#: The WorkerSettings field the ALERT_* variables fill.
ALERT_CHANNELS_FIELD: Final = "alert_channels"
#: How a ConfigError names the ALERT_* variables (``groups`` of config_error).
ALERT_VARIABLE_GROUPS: Final[Mapping[str, FlatVariables]] = MappingProxyType(
    {ALERT_CHANNELS_FIELD: FlatVariables(ALERT_ENV_PREFIX, _UNSHOWN_ALERT_FIELDS)}
)


def check_alertmanager_url(url: str) -> str:
    """Alertmanager's base URL, http(s) with a host and nothing else: no credentials in it
    (they have their own variables), no query or fragment; trailing ``/`` and a trailing
    ``/api/v2/alerts`` are dropped. Plain http is accepted here: with credentials, the
    settings (and the channel) require https to a remote host with :func:`check_http_url`.
    The ValueError shows the URL masked."""
    shown = mask_url(url) if isinstance(url, str) else repr(url)
    parts = split_http_url(url, "Alertmanager", shown, lambda _: f"{shown} must be http or https")
    assert isinstance(url, str)  # split_http_url refused anything else
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"Alertmanager: URL {shown} holds credentials: set"
            " ALERT_ALERTMANAGER_USERNAME/PASSWORD or ALERT_ALERTMANAGER_TOKEN instead"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"Alertmanager: URL {shown} must be a base URL, without ? or #")
    base = url.rstrip("/")
    return base.removesuffix(ALERTMANAGER_ALERTS_PATH).rstrip("/")


def _check_addresses(addresses: tuple[str, ...]) -> None:
    """Refuse what cannot go in a From or To header (the error shows the variable's value)."""
    for address in addresses:
        if "@" not in address or "," in address or any(ch.isspace() for ch in address):
            raise ValueError("must hold e-mail addresses")


class AlertChannelSettings(BaseModel):
    """Where alerts go: e-mail, Slack, a signed webhook, Alertmanager (each optional; the log
    always).

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
    alertmanager_url: str | None = None
    alertmanager_username: str | None = None
    alertmanager_password: SecretStr | None = None
    alertmanager_token: SecretStr | None = None
    alertmanager_resolve_timeout: float = ALERTMANAGER_RESOLVE_TIMEOUT_S
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
            raise config_error(
                exc, groups=ALERT_VARIABLE_GROUPS, within=(ALERT_CHANNELS_FIELD,)
            ) from None

    @field_validator("smtp_host", "smtp_from", "smtp_user", "slack_webhook_url", "webhook_url",
                     "alertmanager_url", "alertmanager_username", mode="before")  # fmt: skip
    @classmethod
    def _blank_text_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator(
        "smtp_password", "webhook_secret", "alertmanager_password", "alertmanager_token",
        mode="before",
    )  # fmt: skip
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

    @field_validator("channel_timeout", "alertmanager_resolve_timeout", mode="before")
    @classmethod
    def _seconds(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return cls.model_fields[str(info.field_name)].default
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

    @field_validator("alertmanager_url")
    @classmethod
    def _alertmanager_url(cls, value: str | None) -> str | None:
        return None if value is None else check_alertmanager_url(value)

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
        self._check_alertmanager_credentials()
        return self

    def _check_alertmanager_credentials(self) -> None:
        """Basic auth (both parts) or a token, never both, and never over plain http to
        another host."""
        v = self.variable
        user, password, token = (
            self.alertmanager_username,
            self.alertmanager_password,
            self.alertmanager_token,
        )
        if user and not password:
            raise ValueError(
                f"{v('alertmanager_password')} is required when {v('alertmanager_username')} is set"
            )
        if password and not user:
            raise ValueError(
                f"{v('alertmanager_username')} is required when {v('alertmanager_password')} is set"
            )
        if token and user:
            raise ValueError(
                f"{v('alertmanager_token')} and {v('alertmanager_username')}/"
                f"{v('alertmanager_password')} exclude each other: pick bearer or basic auth"
            )
        given = [v(f) for f in ("alertmanager_password", "alertmanager_token") if getattr(self, f)]
        if not given:
            return
        if not self.alertmanager_url:
            raise ValueError(f"{v('alertmanager_url')} is required when {given[0]} is set")
        try:
            check_http_url(self.alertmanager_url, "Alertmanager")
        except ValueError as exc:
            raise ValueError(
                f"{v('alertmanager_url')}: {exc} when {given[0]} is set: the credentials"
                " would go out in clear text"
            ) from None

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


class AlertVariables(PydanticBaseSettingsSource):
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
        return {ALERT_CHANNELS_FIELD: values} if values else {}
