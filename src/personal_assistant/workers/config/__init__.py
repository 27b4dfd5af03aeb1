"""The one place the environment is read: every variable of the compose files, validated.

Variables come from the environment and from ``.env`` alike (the environment wins). A bad value
stops start-up with one message that names the variable; URLs with passwords are masked
wherever settings are printed or logged (``repr``, ``safe_dict`` and the log filter).

Import from here; the modules hold one concept each:

- settings.py: :class:`WorkerSettings`, :func:`load_settings`, :func:`get_settings`
- alert_channels.py: :class:`AlertChannelSettings`, read from the flat ``ALERT_*`` variables
- errors.py: :class:`ConfigError`, a ValidationError as one line naming each variable
- masking.py: :func:`mask_url`, :func:`mask_endpoint`, :class:`MaskSecretsFilter`,
  :func:`mask_httpx_request_urls`
- urls.py: :func:`is_redis_url`, :func:`state_redis_url`, :func:`check_http_url`
"""

from __future__ import annotations

from personal_assistant.workers.config.alert_channels import (
    ALERT_CHANNEL_TIMEOUT_S,
    ALERT_ENV_PREFIX,
    AlertChannelSettings,
)
from personal_assistant.workers.config.errors import ConfigError
from personal_assistant.workers.config.masking import (
    MASK,
    MaskRequestURLFilter,
    MaskSecretsFilter,
    mask_endpoint,
    mask_httpx_request_urls,
    mask_url,
)
from personal_assistant.workers.config.settings import (
    Environment,
    LogLevel,
    WorkerSettings,
    get_settings,
    load_settings,
)
from personal_assistant.workers.config.urls import (
    BACKEND_SCHEMES,
    BROKER_SCHEMES,
    REDIS_URL_SCHEMES,
    check_http_url,
    is_redis_url,
    state_redis_url,
)

__all__ = [
    "ALERT_CHANNEL_TIMEOUT_S",
    "ALERT_ENV_PREFIX",
    "BACKEND_SCHEMES",
    "BROKER_SCHEMES",
    "MASK",
    "REDIS_URL_SCHEMES",
    "AlertChannelSettings",
    "ConfigError",
    "Environment",
    "LogLevel",
    "MaskRequestURLFilter",
    "MaskSecretsFilter",
    "WorkerSettings",
    "check_http_url",
    "get_settings",
    "is_redis_url",
    "load_settings",
    "mask_endpoint",
    "mask_httpx_request_urls",
    "mask_url",
    "state_redis_url",
]
