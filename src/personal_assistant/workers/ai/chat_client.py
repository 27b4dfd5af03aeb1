"""One call of an OpenAI-compatible chat-completions endpoint, with its failures typed.

``POST {AI_BASE_URL}/chat/completions`` with ``{model, messages, max_tokens}``, the key as a
Bearer token only when AI_API_KEY is set (a local server needs none). The API's answers map to
one exception each, so the task decides per type: :class:`RateLimited` (429, with the wait the
server asked for), :class:`ServerError` (5xx), :class:`Timeout` and :class:`Unreachable` are
transient (``errors.TransientError``); :class:`ClientError` (any other 4xx: a bad key, an
unknown model, a prompt too long) and :class:`MalformedResponse` are permanent
(``errors.PermanentError``): sending the same request again gets the same answer.

The key is never logged or put in an error (an API that echoes it back has it replaced), URLs
are masked, and prompts and answers are logged at DEBUG only: they are the user's private text.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx

from personal_assistant.workers.config.domain_settings import DomainSettings
from personal_assistant.workers.config.masking import MASK, mask_url
from personal_assistant.workers.errors import PermanentError, TransientError

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""The largest reply read: an answer of AI_MAX_TOKENS tokens is a few kilobytes and even 128k
tokens are about 0.5 MB, so this only stops a wrong URL from streaming a large file into memory."""

CONNECT_TIMEOUT_S = 10.0
"""Connecting takes milliseconds when the server is up; AI_TIMEOUT (minutes) is for the answer."""

DEFAULT_RETRY_AFTER_S = 30.0
"""The wait after a 429 without a usable Retry-After: providers count requests per minute, so
half a minute is a fair first guess at when the window frees."""

MAX_RETRY_AFTER_S = 600.0
"""The longest wait honoured: below AI_LEASE_S (the job's claim) and MAX_COUNTDOWN_S. A provider
asking for longer has a quota problem, which the run's retry budget then reports."""

MAX_ERROR_CHARS = 300
"""How much of an API's error message an error keeps: enough for the reason, never a dump."""

_DELTA_SECONDS = re.compile(r"\d+(\.\d+)?")


@dataclass(frozen=True)
class Completion:
    """The model's answer and what it cost."""

    answer: str
    prompt_tokens: int
    completion_tokens: int
    # The model that answered, as the API named it (may be more precise than the one asked).
    model: str


class ChatError(Exception):
    """A chat-completions call that did not produce an answer."""

    #: The ``outcome`` label of the AI_REQUESTS counter.
    outcome: ClassVar[str] = "error"


class RateLimited(ChatError, TransientError):
    """429: too many requests; ``retry_after`` is the wait the server asked for, in seconds."""

    outcome = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(ChatError, TransientError):
    """5xx: the provider failed; the same request may succeed later."""

    outcome = "server_error"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Timeout(ChatError, TransientError):
    """No answer within AI_TIMEOUT (or a 408)."""

    outcome = "timeout"


class Unreachable(ChatError, TransientError):
    """No connection: refused, reset, DNS, TLS."""


class ClientError(ChatError, PermanentError):
    """A 4xx other than 429 (or a redirect): the request itself is wrong; retrying cannot help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class MalformedResponse(ChatError, PermanentError):
    """A 2xx reply that is not a chat completion (no JSON, no choices, no message)."""


def build_messages(prompt: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """The ``messages`` of a job: its system prompt (if any), then its prompt as the user's."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": prompt})
    return messages


def parse_retry_after(value: str | None, now: datetime | None = None) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date), capped at
    MAX_RETRY_AFTER_S; DEFAULT_RETRY_AFTER_S when absent or unreadable."""
    if value is None or not value.strip():
        return DEFAULT_RETRY_AFTER_S
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return DEFAULT_RETRY_AFTER_S
        if moment.tzinfo is None:  # "-0000": UTC with no claim about local time (RFC 5322)
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return DEFAULT_RETRY_AFTER_S
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _scrub(text: str, key: str) -> str:
    """``text`` shortened, on one line, with the key (if the API echoed it) and URLs masked."""
    if key:
        text = text.replace(key, MASK)
    return mask_url(" ".join(text.split()))[:MAX_ERROR_CHARS]


def _api_error_message(raw: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the start of the body."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw[:MAX_ERROR_CHARS].decode("utf-8", "replace")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return raw[:MAX_ERROR_CHARS].decode("utf-8", "replace")


def _token_count(usage: Mapping[str, Any], name: str) -> int:
    value = usage.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedResponse(f"usage.{name} is not a token count")
    return value


def parse_completion(raw: bytes, requested_model: str) -> Completion:
    """The Completion in a 2xx body, or MalformedResponse naming what is missing."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise MalformedResponse("the reply is not JSON") from None
    if not isinstance(body, dict):
        raise MalformedResponse("the reply is not a JSON object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse("the reply has no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        raise MalformedResponse("the reply's first choice has no message content")
    # Some local servers send no usage; a missing count is 0, a wrong one is an error.
    usage = body.get("usage") or {}
    if not isinstance(usage, dict):
        raise MalformedResponse("the reply's usage is not an object")
    model = body.get("model")
    return Completion(
        answer=message["content"],
        prompt_tokens=_token_count(usage, "prompt_tokens"),
        completion_tokens=_token_count(usage, "completion_tokens"),
        model=model if isinstance(model, str) and model else requested_model,
    )


def _read_capped(response: httpx.Response, deadline: float, where: str) -> bytes:
    """The body, refusing more than MAX_RESPONSE_BYTES or a trickle past the deadline."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise MalformedResponse(f"{where}: reply larger than {MAX_RESPONSE_BYTES} bytes")
        if time.monotonic() > deadline:
            raise Timeout(f"{where}: reply still arriving after the timeout")
        chunks.append(chunk)
    return b"".join(chunks)


def complete(
    client: httpx.Client,
    settings: DomainSettings,
    model: str,
    messages: Sequence[Mapping[str, str]],
    *,
    max_tokens: int | None = None,
) -> Completion:
    """Ask ``model`` for the completion of ``messages`` (see the module doc for the errors)."""
    if not settings.ai_base_url:
        raise ValueError("AI_BASE_URL is not set")
    url = settings.ai_model_url
    where = f"chat completions at {mask_url(url)}"
    key = settings.ai_api_key.get_secret_value()
    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    body = {
        "model": model,
        "messages": [dict(m) for m in messages],
        "max_tokens": max_tokens or settings.ai_max_tokens,
    }
    timeout = httpx.Timeout(
        settings.ai_timeout, connect=min(settings.ai_timeout, CONNECT_TIMEOUT_S)
    )
    deadline = time.monotonic() + settings.ai_timeout
    logger.debug("POST %s model=%s messages=%s", mask_url(url), model, body["messages"])
    try:
        with client.stream("POST", url, json=body, headers=headers, timeout=timeout) as response:
            status = response.status_code
            raw = _read_capped(response, deadline, where)
            retry_after = response.headers.get("retry-after")
    except httpx.TimeoutException:
        raise Timeout(f"{where}: no answer within {settings.ai_timeout:g} s") from None
    except httpx.DecodingError:
        raise MalformedResponse(f"{where}: the reply's encoding is broken") from None
    except httpx.HTTPError as exc:  # refused, reset, DNS, TLS, protocol errors
        reason = _scrub(str(exc), key) or type(exc).__name__
        raise Unreachable(f"{where}: cannot connect ({reason})") from None
    if 200 <= status < 300:
        completion = parse_completion(raw, model)
        logger.debug("answer of %s: %s", completion.model, completion.answer)
        return completion
    detail = _scrub(_api_error_message(raw), key)
    if status == 429:
        wait = parse_retry_after(retry_after)
        raise RateLimited(f"{where}: HTTP 429 (retry after {wait:g} s): {detail}", wait)
    if status >= 500:
        raise ServerError(f"{where}: HTTP {status}: {detail}", status)
    if status == 408:
        raise Timeout(f"{where}: HTTP 408: {detail}")
    if 300 <= status < 400:
        detail = "redirects are not followed; check AI_BASE_URL"
    raise ClientError(f"{where}: HTTP {status}: {detail}", status)
