"""The chat-completions client against a loopback server that answers as OpenAI does: an
answer and its usage; a 429 with Retry-After in both forms; a 5xx; a reply slower than the
timeout; a 401 whose message echoes the key (which never reaches the error); malformed
replies. Transient failures are TransientError, permanent ones PermanentError."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from personal_assistant.workers.ai.chat_client import (
    DEFAULT_RETRY_AFTER_S,
    MAX_RETRY_AFTER_S,
    ClientError,
    Completion,
    MalformedResponse,
    RateLimited,
    ServerError,
    Timeout,
    Unreachable,
    build_messages,
    complete,
    parse_retry_after,
)
from personal_assistant.workers.config import WorkerSettings, load_settings
from personal_assistant.workers.errors import is_transient
from tests.support.chat_api import ChatAPI, Reply, error_body
from tests.support.redis_server import free_port

KEY = "sk-test-0123456789abcdef"  # a test key, sent only to loopback


@pytest.fixture
def api() -> Iterator[ChatAPI]:
    server = ChatAPI(answer="Buy milk.", prompt_tokens=13, completion_tokens=4)
    yield server
    server.close()


def settings_for(base_url: str, **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {"ai_base_url": base_url, "ai_model": "test-model"} | overrides
    return load_settings(**values)


def ask(api_or_url: ChatAPI | str, **overrides: Any) -> Completion:
    base = api_or_url.base_url if isinstance(api_or_url, ChatAPI) else api_or_url
    with httpx.Client() as client:
        return complete(
            client,
            settings_for(base, **overrides),
            "test-model",
            build_messages("What should I buy?", "You are terse."),
        )


def test_an_answer_comes_back_with_its_token_usage(api: ChatAPI, clean_env: Any) -> None:
    completion = ask(api, ai_api_key=KEY, ai_max_tokens=64)

    assert completion == Completion("Buy milk.", 13, 4, "test-model")
    (request,) = api.chat_requests()
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.body == {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What should I buy?"},
        ],
        "max_tokens": 64,
    }


def test_without_a_key_no_authorization_header_is_sent(api: ChatAPI, clean_env: Any) -> None:
    ask(api)

    (request,) = api.chat_requests()
    assert "Authorization" not in request.headers


def test_a_429_carries_the_retry_after_in_seconds(api: ChatAPI, clean_env: Any) -> None:
    api.rate_limit_next("7")

    with pytest.raises(RateLimited) as caught:
        ask(api)

    assert caught.value.retry_after == 7.0
    assert "HTTP 429" in str(caught.value)
    assert is_transient(caught.value)


def test_a_429_with_an_http_date_waits_until_that_date(api: ChatAPI, clean_env: Any) -> None:
    api.rate_limit_next(format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True))

    with pytest.raises(RateLimited) as caught:
        ask(api)

    assert 27.0 <= caught.value.retry_after <= 30.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: at once
        ("86400", MAX_RETRY_AFTER_S),  # capped
        (None, DEFAULT_RETRY_AFTER_S),
        ("soon", DEFAULT_RETRY_AFTER_S),
        ("-5", DEFAULT_RETRY_AFTER_S),
    ],
)
def test_retry_after_is_read_as_delta_seconds_or_http_date_and_capped(
    header: str | None, seconds: float
) -> None:
    now = datetime(2015, 10, 21, 7, 28, tzinfo=UTC)

    assert parse_retry_after(header, now) == seconds


def test_a_5xx_is_a_transient_server_error(api: ChatAPI, clean_env: Any) -> None:
    api.fail_next(503, message="overloaded")

    with pytest.raises(ServerError) as caught:
        ask(api)

    assert caught.value.status == 503
    assert "HTTP 503: overloaded" in str(caught.value)
    assert is_transient(caught.value)


def test_a_reply_slower_than_the_timeout_is_a_transient_timeout(
    api: ChatAPI, clean_env: Any
) -> None:
    api.stall_next(1.5)
    started = time.monotonic()

    with pytest.raises(Timeout) as caught:
        ask(api, ai_timeout=0.3)

    assert time.monotonic() - started < 1.2
    assert "no answer within 0.3 s" in str(caught.value)
    assert is_transient(caught.value)


def test_a_401_is_a_permanent_client_error_that_never_shows_the_key(
    api: ChatAPI, clean_env: Any
) -> None:
    # Some APIs echo the key they refused; the error must not carry it into logs.
    api.queue(Reply(401, error_body(f"Incorrect API key provided: {KEY}.")))

    with pytest.raises(ClientError) as caught:
        ask(api, ai_api_key=KEY)

    assert caught.value.status == 401
    assert "Incorrect API key provided: ****" in str(caught.value)
    assert KEY not in str(caught.value)
    assert not is_transient(caught.value)


def test_an_unknown_path_is_a_client_error_naming_the_status(clean_env: Any, api: ChatAPI) -> None:
    with pytest.raises(ClientError, match="HTTP 404"):
        ask(api.base_url.removesuffix("/v1") + "/wrong")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>gateway</html>", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"choices": []}', "no choices"),
        (b'{"choices": [{"message": {"role": "assistant"}}]}', "no message content"),
        (b'{"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": -1}}', "usage"),
    ],
)
def test_a_malformed_reply_is_a_permanent_error_saying_what_is_missing(
    api: ChatAPI, clean_env: Any, body: bytes, message: str
) -> None:
    api.queue(Reply(200, body))

    with pytest.raises(MalformedResponse, match=message) as caught:
        ask(api)

    assert not is_transient(caught.value)


def test_a_reply_without_usage_counts_no_tokens(api: ChatAPI, clean_env: Any) -> None:
    api.queue(Reply(200, b'{"choices": [{"message": {"content": "hi"}}]}'))

    assert ask(api) == Completion("hi", 0, 0, "test-model")


def test_a_refused_connection_is_transient_and_names_the_masked_url(clean_env: Any) -> None:
    base = f"http://user:hunter2@127.0.0.1:{free_port()}/v1"

    with pytest.raises(Unreachable) as caught:
        ask(base)

    assert "cannot connect" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert is_transient(caught.value)
