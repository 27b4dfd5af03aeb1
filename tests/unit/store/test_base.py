"""UTCDateTime: aware datetimes in, the same instants out as UTC, naive ones refused."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, text
from sqlalchemy.exc import StatementError

from personal_assistant.workers.store.base import UTCDateTime, utcnow
from personal_assistant.workers.store.engine import engine_for, session_scope

# A table of its own, so the models' metadata (which the migration is compared with) stays as is.
_metadata = MetaData()
moments = Table(
    "moments",
    _metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime()),
)

INDIA = timezone(timedelta(hours=5, minutes=30))
NEW_YORK_WINTER = timezone(timedelta(hours=-5))


def _store(url: str, *instants: datetime) -> None:
    _metadata.create_all(engine_for(url))
    with session_scope(url) as session:
        for instant in instants:
            session.execute(insert(moments).values(at=instant))


def _read_all(url: str) -> list[datetime]:
    with session_scope(url) as session:
        return list(session.scalars(select(moments.c.at).order_by(moments.c.id)))


def test_utcnow_is_an_aware_utc_datetime_of_now() -> None:
    now = utcnow()
    assert now.tzinfo is UTC
    assert abs(now.timestamp() - time.time()) < 5


def test_an_aware_datetime_comes_back_as_the_same_instant_in_utc(store_url: str) -> None:
    written = datetime(2026, 3, 29, 3, 30, 15, 123456, tzinfo=INDIA)
    _store(store_url, written)

    [read] = _read_all(store_url)

    assert read == written
    assert read.tzinfo is UTC
    assert read.replace(tzinfo=None) == datetime(2026, 3, 28, 22, 0, 15, 123456)


def test_a_postgresql_session_in_another_time_zone_still_reads_utc(postgres_url: str) -> None:
    written = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    _store(postgres_url, written)

    with session_scope(postgres_url) as session:
        # psycopg hands back timestamptz in the session's zone: here not UTC.
        session.execute(text("SET LOCAL TIME ZONE 'America/New_York'"))
        raw = session.execute(text("SELECT at FROM moments")).scalar_one()
        read = session.scalars(select(moments.c.at)).one()

    assert raw.utcoffset() == timedelta(hours=-4)
    assert read == written
    assert read.tzinfo is UTC


def test_a_naive_datetime_is_refused_with_a_clear_error_and_nothing_is_stored(
    store_url: str,
) -> None:
    _metadata.create_all(engine_for(store_url))

    with (
        pytest.raises(StatementError, match=r"naive datetime 2026-03-29T03:30:00: give a timezone"),
        session_scope(store_url) as session,
    ):
        session.execute(insert(moments).values(at=datetime(2026, 3, 29, 3, 30)))

    assert _read_all(store_url) == []


def test_a_naive_datetime_is_refused_in_a_query_too(sqlite_url: str) -> None:
    _store(sqlite_url, utcnow())

    with pytest.raises(StatementError, match="naive datetime"), session_scope(sqlite_url) as s:
        s.execute(select(moments).where(moments.c.at < datetime(2026, 1, 1)))


def test_on_sqlite_the_stored_text_sorts_in_time_order(sqlite_url: str) -> None:
    # Wall-clock order (a, b, c, d) differs from time order (a, d, b, c); b and c are one
    # microsecond apart; a is on the day before in its own zone.
    a = datetime(2026, 1, 1, 23, 59, 59, tzinfo=NEW_YORK_WINTER)  # 04:59:59.000000 UTC
    b = datetime(2026, 1, 2, 5, 0, 0, tzinfo=UTC)  # 05:00:00.000000 UTC
    c = datetime(2026, 1, 2, 6, 0, 0, 1, tzinfo=timezone(timedelta(hours=1)))  # 05:00:00.000001
    d = datetime(2026, 1, 2, 10, 29, 59, 500000, tzinfo=INDIA)  # 04:59:59.500000 UTC
    _store(sqlite_url, c, a, d, b)

    with session_scope(sqlite_url) as session:
        texts = list(session.execute(text("SELECT at FROM moments ORDER BY at")).scalars())
        ordered = list(session.scalars(select(moments.c.at).order_by(moments.c.at)))
        before_five = list(
            session.scalars(
                # The bound is converted too: 06:00 at UTC+1 is 05:00 UTC.
                select(moments.c.at)
                .where(
                    moments.c.at < datetime(2026, 1, 2, 6, 0, tzinfo=timezone(timedelta(hours=1)))
                )
                .order_by(moments.c.at)
            )
        )

    assert ordered == [a, d, b, c]
    assert texts == [
        "2026-01-02 04:59:59.000000",
        "2026-01-02 04:59:59.500000",
        "2026-01-02 05:00:00.000000",
        "2026-01-02 05:00:00.000001",
    ]
    assert before_five == [a, d]
