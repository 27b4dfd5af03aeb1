"""What the config tests share: a password to look for in all that is shown, and the message
of the ConfigError a bad variable raises."""

from __future__ import annotations

import pytest

from personal_assistant.workers.config import ConfigError, load_settings

# The password the tests look for in everything that is printed or logged.
HIDDEN = "hunter2-s3cret"
URL_WITH_SECRET = f"redis://alice:{HIDDEN}@cache.internal:6380/1"


def config_error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    """Set the variables, load the settings, and return the ConfigError's message."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


# A password holding the characters that end a URL's parts: urllib splits the authority at
# the first '/' or '?', and '@' and ':' also delimit userinfo.
AWKWARD = "pa/ss"
