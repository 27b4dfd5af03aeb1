"""Poison screening, pure logic: which headers, ETAs and bodies no worker can run, and why."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery
from celery.utils.functional import head_from_fun
from celery.utils.time import maybe_iso8601
from kombu.utils.json import dumps

from personal_assistant.workers import keys
from personal_assistant.workers.broker import poison
from personal_assistant.workers.broker.poison import (
    HEADER_TYPES,
    POISON_CONTENT_TYPE,
    Rejection,
    describe_raw,
    envelope_for,
    make_printable,
    named_in_tail,
    poison_of,
    raw_text,
    screen_body,
    screen_eta,
    screen_headers,
)


@pytest.fixture(scope="module")
def celery_headers() -> dict[str, Any]:
    """The protocol-2 headers Celery itself writes for a task with every option set."""
    app = Celery("unit-poison", set_as_current=False)
    now = datetime.now(UTC)
    message = app.amqp.as_task_v2(
        "id-1",
        "tests.count",
        args=(1,),
        kwargs={"hold": 0.5},
        eta=now,
        expires=now + timedelta(hours=1),
        time_limit=60,
        soft_time_limit=50,
        group_id="group-1",
        group_index=0,
        root_id="root-1",
        parent_id="parent-1",
    )
    app.close()
    # Through JSON, as a worker receives them (tuples become lists).
    headers: dict[str, Any] = json.loads(dumps(message.headers))
    return headers


def good_headers(**changes: Any) -> dict[str, Any]:
    """Minimal valid protocol-2 headers with ``changes`` applied."""
    headers: dict[str, Any] = {"task": "tests.count", "id": "id-1", "retries": 0}
    headers.update(changes)
    return headers


def wrong_value_for(types: tuple[type, ...]) -> Any:
    """A value of none of ``types`` (a JSON object, or text where an object is expected)."""
    return "text" if dict in types else {"unexpected": 1}


def add(x: int, y: int) -> int:
    """A task body whose signature the arguments must bind to."""
    return x + y


# --- screen_headers --------------------------------------------------------------------------


def test_the_headers_celery_writes_pass_the_screen(celery_headers: dict[str, Any]) -> None:
    assert set(celery_headers) >= {"task", "id", "eta", "expires", "timelimit", "group_index"}
    assert screen_headers(celery_headers) is None


def test_celery_headers_with_this_projects_publish_time_pass_the_screen(
    celery_headers: dict[str, Any],
) -> None:
    assert screen_headers({**celery_headers, keys.PUBLISHED_AT_HEADER: 1_700_000_000.5}) is None


@pytest.mark.parametrize("name", sorted(HEADER_TYPES))
def test_every_known_header_of_the_wrong_type_is_rejected_as_bad_header_naming_it(
    name: str,
) -> None:
    headers = good_headers(**{name: wrong_value_for(HEADER_TYPES[name])})

    rejection = screen_headers(headers)

    assert rejection is not None
    assert rejection.reason == poison.BAD_HEADER
    assert repr(name) in rejection.detail


@pytest.mark.parametrize("name", ["retries", "group_index", "replaced_task_nesting"])
def test_a_boolean_where_an_integer_belongs_is_rejected(name: str) -> None:
    rejection = screen_headers(good_headers(**{name: True}))

    assert rejection is not None
    assert rejection.reason == poison.BAD_HEADER
    assert repr(name) in rejection.detail
    assert "True" in rejection.detail


def test_a_boolean_where_a_boolean_belongs_passes() -> None:
    assert screen_headers(good_headers(ignore_result=True)) is None


def test_a_negative_retry_count_is_rejected() -> None:
    rejection = screen_headers(good_headers(retries=-1))

    assert rejection == Rejection(poison.BAD_HEADER, "header 'retries' is negative (-1)")


@pytest.mark.parametrize("limits", [[], [10], [10, 5, 1], (1, 2, 3)])
def test_a_timelimit_that_is_not_a_pair_is_rejected(limits: list[int] | tuple[int, ...]) -> None:
    rejection = screen_headers(good_headers(timelimit=limits))

    assert rejection is not None
    assert rejection.reason == poison.BAD_HEADER
    assert "'timelimit'" in rejection.detail
    assert "[hard, soft]" in rejection.detail


@pytest.mark.parametrize("limits", [["10", 5], [10, "soon"], [True, None], [None, [1]]])
def test_a_timelimit_holding_something_other_than_numbers_is_rejected(limits: list[Any]) -> None:
    rejection = screen_headers(good_headers(timelimit=limits))

    assert rejection is not None
    assert rejection.reason == poison.BAD_HEADER
    assert "'timelimit'" in rejection.detail


@pytest.mark.parametrize("limits", [[None, None], [60, 50], [60.5, None], (None, 5)])
def test_a_timelimit_of_numbers_or_nulls_passes(limits: list[Any] | tuple[Any, ...]) -> None:
    assert screen_headers(good_headers(timelimit=limits)) is None


def test_headers_celery_does_not_write_pass_unchecked() -> None:
    headers = good_headers(x_tenant={"id": 7}, trace=[1, 2], pa_custom=None)

    assert screen_headers(headers) is None


@pytest.mark.parametrize("name", ["task", "id"])
@pytest.mark.parametrize("value", [None, "", 42])
def test_a_task_or_id_that_is_missing_empty_or_not_text_is_rejected(name: str, value: Any) -> None:
    headers = good_headers(**{name: value})
    if value is None:
        del headers[name]

    rejection = screen_headers(headers)

    assert rejection == Rejection(poison.BAD_HEADER, f"header {name!r} must be a non-empty string")


@pytest.mark.parametrize("headers", [None, ["task", "id"], "task=x"])
def test_headers_that_are_not_a_mapping_are_rejected(headers: Any) -> None:
    rejection = screen_headers(headers)

    assert rejection is not None
    assert rejection.reason == poison.BAD_HEADER
    assert "not a mapping" in rejection.detail


# --- screen_eta ------------------------------------------------------------------------------


def test_iso_8601_eta_and_expiry_pass(celery_headers: dict[str, Any]) -> None:
    assert isinstance(celery_headers["eta"], str)
    assert screen_eta(celery_headers, maybe_iso8601) is None


def test_missing_or_null_eta_and_expiry_pass() -> None:
    assert screen_eta(good_headers(eta=None), maybe_iso8601) is None
    assert screen_eta(good_headers(), maybe_iso8601) is None


@pytest.mark.parametrize("name", ["eta", "expires"])
@pytest.mark.parametrize("value", ["yesterday", "2024-13-45T00:00:00", "nan"])
def test_an_unparseable_eta_or_expiry_is_rejected_as_bad_eta_naming_the_header(
    name: str, value: str
) -> None:
    rejection = screen_eta(good_headers(**{name: value}), maybe_iso8601)

    assert rejection is not None
    assert rejection.reason == poison.BAD_ETA
    assert rejection.detail.startswith(f"header {name!r} is {value!r}: ")


def test_an_eta_the_parser_overflows_on_is_rejected() -> None:
    def overflowing(value: str) -> datetime:
        raise OverflowError("date value out of range")

    rejection = screen_eta(good_headers(eta="9999-12-31T23:59:59"), overflowing)

    assert rejection is not None
    assert rejection.reason == poison.BAD_ETA
    assert "out of range" in rejection.detail


# --- screen_body -----------------------------------------------------------------------------


def test_a_body_whose_arguments_bind_to_the_task_passes() -> None:
    body = [[1], {"y": 2}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]

    assert screen_body(body, head_from_fun(add)) is None


def test_a_body_with_a_null_embed_and_no_signature_check_passes() -> None:
    assert screen_body([[1, 2, 3], {}, None], None) is None


@pytest.mark.parametrize("body", [None, "[[], {}, {}]", [[], {}], [[], {}, {}, {}], {"args": []}])
def test_a_body_that_is_not_three_items_is_rejected_as_bad_body(body: Any) -> None:
    assert screen_body(body, None) == Rejection(
        poison.BAD_BODY, "the body is not [args, kwargs, embed]"
    )


@pytest.mark.parametrize("body", [["1", {}, {}], [[], [], {}], [{"x": 1}, {}, {}], [[], None, {}]])
def test_args_that_are_not_a_list_or_kwargs_that_are_not_an_object_are_rejected(
    body: list[Any],
) -> None:
    assert screen_body(body, None) == Rejection(
        poison.BAD_BODY, "args must be a list and kwargs an object"
    )


def test_kwargs_with_names_that_are_not_strings_are_rejected() -> None:
    assert screen_body([[], {1: "x"}, {}], None) == Rejection(
        poison.BAD_BODY, "keyword argument names must be strings"
    )


@pytest.mark.parametrize("embed", [[], "callbacks", 0])
def test_an_embed_that_is_not_an_object_is_rejected(embed: Any) -> None:
    assert screen_body([[], {}, embed], None) == Rejection(
        poison.BAD_BODY, "the body's third item must be an object"
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [
        ([1, 2, 3], {}, "positional argument"),
        ([1], {}, "missing"),
        ([1, 2], {"z": 3}, "unexpected keyword argument"),
        ([1], {"x": 2}, "multiple values"),
    ],
)
def test_arguments_that_do_not_bind_to_the_tasks_signature_are_invalid_arguments(
    args: list[Any], kwargs: dict[str, Any], words: str
) -> None:
    rejection = screen_body([args, kwargs, None], head_from_fun(add))

    assert rejection is not None
    assert rejection.reason == poison.INVALID_ARGUMENTS
    assert words in rejection.detail


def test_the_signature_check_runs_only_when_the_task_has_one() -> None:
    assert screen_body([[1, 2, 3], {"z": 1}, None], None) is None


# --- poison_of -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        (poison.NOT_JSON, "the message is not JSON"),
        (poison.MALFORMED, "not a kombu message"),
        (poison.TOO_LARGE, "larger than BROKER_MAX_MESSAGE_BYTES"),
    ],
)
def test_a_poison_envelope_gives_its_reason_and_size(reason: str, words: str) -> None:
    rejection = poison_of({poison.POISON_HEADER: reason, poison.POISON_SIZE_HEADER: 1234})

    assert rejection is not None
    assert rejection.reason == reason
    assert words in rejection.detail
    assert rejection.detail.endswith("(1234 bytes)")


def test_a_poison_envelope_without_a_size_gives_no_size() -> None:
    rejection = poison_of({poison.POISON_HEADER: poison.NOT_JSON})

    assert rejection == Rejection(poison.NOT_JSON, "the message is not JSON")


def test_a_known_reason_without_a_sentence_of_its_own_is_its_own_detail() -> None:
    rejection = poison_of({poison.POISON_HEADER: poison.UNKNOWN_TASK})

    assert rejection == Rejection(poison.UNKNOWN_TASK, poison.UNKNOWN_TASK)


@pytest.mark.parametrize("reason", ["gremlins", "", 7])
def test_an_unknown_poison_reason_is_reported_as_malformed(reason: Any) -> None:
    rejection = poison_of({poison.POISON_HEADER: reason, poison.POISON_SIZE_HEADER: 9})

    assert rejection is not None
    assert rejection.reason == poison.MALFORMED
    assert "not a kombu message" in rejection.detail
    assert rejection.detail.endswith("(9 bytes)")


@pytest.mark.parametrize("reason", [["not_json"], {"why": "x"}])
def test_an_unhashable_poison_reason_is_reported_as_malformed(reason: Any) -> None:
    rejection = poison_of({poison.POISON_HEADER: reason})

    assert rejection is not None
    assert rejection.reason == poison.MALFORMED


def test_the_detail_header_replaces_the_reasons_sentence() -> None:
    headers = {
        poison.POISON_HEADER: poison.MALFORMED,
        poison.POISON_SIZE_HEADER: 17,
        poison.POISON_DETAIL_HEADER: "the message is not valid UTF-8 JSON",
    }

    assert poison_of(headers) == Rejection(
        poison.MALFORMED, "the message is not valid UTF-8 JSON (17 bytes)"
    )


@pytest.mark.parametrize("headers", [None, "pa_poison", [("pa_poison", "not_json")], 3])
def test_headers_that_are_not_a_mapping_carry_no_poison(headers: Any) -> None:
    assert poison_of(headers) is None


def test_an_ordinary_messages_headers_carry_no_poison(celery_headers: dict[str, Any]) -> None:
    assert poison_of(celery_headers) is None
    assert poison_of({poison.POISON_HEADER: None}) is None


def test_a_rejection_reads_as_reason_then_detail() -> None:
    assert str(Rejection(poison.BAD_ETA, "header 'eta' is 'x'")) == "bad_eta: header 'eta' is 'x'"


# --- named_in_tail ---------------------------------------------------------------------------


def test_the_task_id_and_name_are_read_from_the_tail_of_a_kombu_message() -> None:
    message = {
        "body": "x" * 50_000,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": "tests.count", "id": "3f2a-77"},
        "properties": {"delivery_tag": "t"},
    }
    tail = dumps(message)[-4096:]

    assert named_in_tail({poison.POISON_TAIL_HEADER: tail}) == ("3f2a-77", "tests.count")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {poison.POISON_TAIL_HEADER: None},
        {poison.POISON_TAIL_HEADER: b'"id": "x", "task": "y"'},
        {poison.POISON_TAIL_HEADER: "x" * 4096},
    ],
)
def test_a_tail_without_an_id_or_name_names_nothing(headers: Mapping[str, Any]) -> None:
    assert named_in_tail(headers) == (None, None)


def test_a_tail_naming_only_the_task_gives_only_the_task() -> None:
    assert named_in_tail({poison.POISON_TAIL_HEADER: '..., "task": "tests.count"}'}) == (
        None,
        "tests.count",
    )


# --- make_printable --------------------------------------------------------------------------


def test_undecodable_bytes_of_a_poison_envelope_become_hex_escapes() -> None:
    raw = b"\xff\xfe caf\xc3\xa9"
    text = raw.decode("utf-8", "surrogateescape")
    payload: dict[str, Any] = {
        "body": text,
        "content-type": POISON_CONTENT_TYPE,
        "headers": {poison.POISON_HEADER: poison.TOO_LARGE, poison.POISON_TAIL_HEADER: text},
    }

    printable = make_printable(payload)

    assert printable["body"] == "\\xff\\xfe café"
    assert printable["headers"][poison.POISON_TAIL_HEADER] == "\\xff\\xfe café"
    printable["body"].encode("utf-8")  # kombu can encode it now


def test_a_message_that_is_not_a_poison_envelope_is_left_as_it_is() -> None:
    text = b"\xff".decode("utf-8", "surrogateescape")
    payload: dict[str, Any] = {"body": text, "content-type": "application/json", "headers": {}}

    assert make_printable(payload) == {
        "body": text,
        "content-type": "application/json",
        "headers": {},
    }
    assert make_printable(None) is None
    assert make_printable(["a", text]) == ["a", text]


# --- envelope_for ----------------------------------------------------------------------------


def test_an_envelope_built_by_the_consumer_has_the_shape_the_fetch_script_writes() -> None:
    raw = b'{"body": "\xff"}'

    envelope = envelope_for(raw, "tag-9", "ai_tasks", "the message is not valid UTF-8 JSON")

    assert envelope == {
        "body": '{"body": "\\xff"}',
        "content-type": POISON_CONTENT_TYPE,
        "content-encoding": "binary",
        "headers": {
            poison.POISON_HEADER: poison.MALFORMED,
            poison.POISON_SIZE_HEADER: len(raw),
            poison.POISON_DETAIL_HEADER: "the message is not valid UTF-8 JSON",
        },
        "properties": {
            "delivery_tag": "tag-9",
            "priority": 0,
            "delivery_info": {"exchange": "", "routing_key": "ai_tasks"},
        },
    }
    assert poison_of(envelope["headers"]) == Rejection(
        poison.MALFORMED, f"the message is not valid UTF-8 JSON ({len(raw)} bytes)"
    )


def test_an_envelope_keeps_only_the_first_characters_of_a_long_body() -> None:
    envelope = envelope_for("a" * 50 + "b" * 50, "t", "q", "unreadable message", keep=50)

    assert envelope["body"] == "a" * 50
    assert envelope["headers"][poison.POISON_SIZE_HEADER] == 100


# --- describe_raw and raw_text ---------------------------------------------------------------


def test_raw_text_cuts_a_long_body_and_says_how_much_it_cut() -> None:
    assert raw_text("abcdefghij", 4) == "abcd... [6 chars cut]"


def test_raw_text_keeps_a_body_within_the_limit_whole() -> None:
    assert raw_text("abcd", 4) == "abcd"
    assert raw_text(None, 4) == ""


def test_raw_text_shows_undecodable_bytes_as_hex_escapes() -> None:
    assert raw_text(b"ok \xff\xfe", 100) == "ok \\xff\\xfe"


def test_describe_raw_shows_the_headers_as_json_and_the_body() -> None:
    described = describe_raw({"task": "tests.count", "id": "i-1"}, b"[[1], {}, {}]", 1000)

    assert described == 'headers: {"task": "tests.count", "id": "i-1"}\nbody: [[1], {}, {}]'


def test_describe_raw_clips_both_headers_and_body_to_the_limit() -> None:
    described = describe_raw({"argsrepr": "x" * 500}, "y" * 500, 40)

    shown_headers, shown_body = described.split("\n")
    assert shown_headers == "headers: " + '{"argsrepr": "' + "x" * 26
    assert shown_body == "body: " + "y" * 40 + "... [460 chars cut]"


def test_describe_raw_falls_back_to_repr_for_headers_json_cannot_write() -> None:
    circular: dict[str, Any] = {"task": "t"}
    circular["self"] = circular

    described = describe_raw(circular, "", 1000)

    assert described.startswith("headers: {'task': 't', 'self': {...}}")


def test_describe_raw_shows_values_json_does_not_know_by_their_repr() -> None:
    described = describe_raw({"when": datetime(2024, 1, 2, tzinfo=UTC)}, "", 1000)

    assert "datetime.datetime(2024, 1, 2, 0, 0" in described
