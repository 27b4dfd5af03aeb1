"""What ``ENVIRONMENT=production`` requires of the settings, checked at start-up.

Pure: a function of the settings' values. Every process (worker, beat, CLI) refuses to start in
production with one line naming everything missing, rather than running with a Redis anyone on
the network can read and write, a debug mode, or a secret copied from an example file:

- a password in every Redis URL (broker, result backend): Redis without one accepts any client;
- ``DEBUG`` off;
- no secret left at a placeholder (``CHANGE_ME``, ``changeme``, ``password``, ...): the values
  ``docker/.env.example`` and tutorials use, which are public.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import unquote, urlsplit

from personal_assistant.workers.config.urls import is_redis_url

# Lower-cased secrets that are public knowledge; a production secret equal to one is refused.
PLACEHOLDER_SECRETS: Final = frozenset(
    {
        "change_me",
        "changeme",
        "change-me",
        "password",
        "secret",
        "admin",
        "redis",
        "postgres",
        "example",
        "default",
        "test",
        "xxx",
    }
)


def url_password(url: str) -> str | None:
    """The password of a URL (``redis://:pw@host``), None when it has none."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def production_problems(
    *,
    urls: Mapping[str, str],
    secrets: Mapping[str, str],
    debug: bool,
) -> list[str]:
    """What is missing for production, one phrase each. ``urls``: variable -> URL (Redis URLs
    must carry a password; every URL's password must not be a placeholder); ``secrets``:
    variable -> value (empty: unset, allowed; a placeholder: refused)."""
    problems: list[str] = []
    for variable, url in urls.items():
        if not url:
            continue
        password = url_password(url)
        if is_redis_url(url) and not url.startswith("unix://") and not password:
            problems.append(f"a password in {variable} (redis://:PASSWORD@host:6379/0)")
        elif password and password.lower() in PLACEHOLDER_SECRETS:
            problems.append(f"a real password in {variable}, not a placeholder")
    if debug:
        problems.append("DEBUG=false")
    for variable, value in secrets.items():
        if value and value.strip().lower() in PLACEHOLDER_SECRETS:
            problems.append(f"a real {variable}, not a placeholder")
    return problems
