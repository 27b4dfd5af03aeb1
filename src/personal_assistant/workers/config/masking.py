"""Secrets kept out of everything printed or logged: URLs with passwords and credential paths.

:func:`mask_url` hides the password of every URL in a text (and ``password=``-style
parameters), keeping user and host readable; :func:`mask_endpoint` shows a URL whose path is
itself a credential (a Slack webhook) as scheme and host only; :class:`MaskSecretsFilter` applies
:func:`mask_url` to every log record a handler emits, tracebacks and stacks included.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

# A scheme at the start of a word ("redis://", "db+postgresql://"): the lookbehind keeps the
# scan linear on long runs of letters (one attempt per word, not one per character).
_SCHEME = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://")
_WHITESPACE = re.compile(r"\s")
# `password=`, `pass=`, `pwd=` (also `redis_password=`, any case), in a query string or a log
# line: the value runs to the next '&', '#' or space. Not `bypass=` or `compass=`.
_SECRET_PARAMETER = re.compile(r"(?i)(?<![A-Za-z0-9])((?:password|pass|pwd)=)[^&#\s]+")
MASK = "****"


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


class MaskRequestURLFilter(logging.Filter):
    """Shows the URL of httpx's "HTTP Request: GET <url> ..." line as ``scheme://host/****``:
    httpx logs every request at INFO, which a worker's ``-l info`` prints, and feed URLs carry
    private tokens (calendar_sync), API paths keys of some providers."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the URL argument in place; never drop a record."""
        if (
            isinstance(record.msg, str)
            and record.msg.startswith("HTTP Request:")
            and isinstance(record.args, tuple)
            and len(record.args) >= 2
        ):
            args = list(record.args)
            args[1] = mask_endpoint(str(args[1]))
            record.args = tuple(args)
        return True


_MASK_REQUEST_URL = MaskRequestURLFilter()


def mask_httpx_request_urls() -> None:
    """Install the URL mask on httpx's logger, once per process (idempotent): by the mask-secrets
    hook in workers and beat, and by each httpx user for processes without it."""
    httpx_logger = logging.getLogger("httpx")
    if _MASK_REQUEST_URL not in httpx_logger.filters:
        httpx_logger.addFilter(_MASK_REQUEST_URL)
