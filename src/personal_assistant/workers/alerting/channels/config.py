"""The alert channels of a process, built from its settings: :func:`channels_from_settings`.

The settings (``WorkerSettings.alert_channels``, read from the ``ALERT_*`` variables of the
environment and ``.env``; config/alert_channels.py lists them) are checked when they load, so a
channel configured in part or unsafely (an SMTP login without TLS, a plain-http webhook, a
short webhook secret, Alertmanager credentials over plain http) has already stopped start-up
with one line naming the variable: here the channels are only built. Secrets leave their
``SecretStr`` only to be handed to the channel that uses them.
"""

from __future__ import annotations

from personal_assistant.workers.alerting.channels.alertmanager import AlertmanagerChannel
from personal_assistant.workers.alerting.channels.base import Channel
from personal_assistant.workers.alerting.channels.email import EmailChannel
from personal_assistant.workers.alerting.channels.webhooks import (
    LogChannel,
    SlackChannel,
    WebhookChannel,
)
from personal_assistant.workers.config import AlertChannelSettings

__all__ = ["channels_from_settings"]


def channels_from_settings(settings: AlertChannelSettings) -> dict[str, Channel]:
    """The configured channels by name: ``log`` always; ``email``, ``slack``, ``webhook`` and
    ``alertmanager`` when their variables are set."""
    timeout = settings.channel_timeout
    channels: dict[str, Channel] = {"log": LogChannel()}
    # The settings hold a whole SMTP configuration or none of it: host, sender and recipients
    # are set together.
    if settings.smtp_host and settings.smtp_from and settings.smtp_to:
        password = settings.smtp_password
        channels["email"] = EmailChannel(
            settings.smtp_host,
            settings.email_port,
            settings.smtp_from,
            settings.smtp_to,
            username=settings.smtp_user,
            password=password.get_secret_value() if password else None,
            starttls=settings.smtp_starttls,
            use_ssl=settings.smtp_ssl,
            timeout=timeout,
        )
    if settings.slack_webhook_url:
        channels["slack"] = SlackChannel(settings.slack_webhook_url, timeout=timeout)
    if settings.webhook_url and settings.webhook_secret:
        channels["webhook"] = WebhookChannel(
            settings.webhook_url, settings.webhook_secret.get_secret_value(), timeout=timeout
        )
    if settings.alertmanager_url:
        password, token = settings.alertmanager_password, settings.alertmanager_token
        channels["alertmanager"] = AlertmanagerChannel(
            settings.alertmanager_url,
            username=settings.alertmanager_username,
            password=password.get_secret_value() if password else None,
            token=token.get_secret_value() if token else None,
            timeout=timeout,
            resolve_timeout=settings.alertmanager_resolve_timeout,
        )
    return channels
