"""An iCalendar body into the events the store keeps: one :class:`FeedEvent` per VEVENT.

Pure (no store, no HTTP). The icalendar library parses; this module normalizes what the store
compares and keys on:

- Key: (UID, RECURRENCE-ID). A single event or a recurring series' master has ``""``; each
  modified occurrence (a VEVENT with RECURRENCE-ID) is its own event, its recurrence id the
  occurrence's original start in UTC (``2026-01-12T08:00:00Z``), or its date for an all-day
  series (``2026-01-12``).
- Times: aware UTC. Time zones come from the feed's VTIMEZONEs or well-known TZIDs (IANA,
  Windows and vendor-prefixed names, as icalendar resolves them). An all-day event starts at
  midnight UTC of its date with ``all_day`` set. A floating time (no zone, or a TZID nobody
  defines) is taken as UTC and the event says so (``floating``).
- ``content_hash``: sha256 over every stored field, so a re-sync skips unchanged events.

A body that is not one VCALENDAR, a VEVENT without UID or DTSTART, or a property the store
reads that does not parse is :class:`~.errors.FeedMalformed`, naming the VEVENT by position,
line and UID. Two VEVENTs with the same key are one event when equal; otherwise the higher
SEQUENCE is the current revision (RFC 5545 3.8.7.4), and a tie is malformed (no way to tell
which one the organizer meant). RRULE is kept as its text; EXDATE and RDATE are not stored.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from icalendar import Calendar, Component, Event

from personal_assistant.workers.calendar_sync.errors import FeedMalformed

# Longest UID the store holds (calendar_events.uid); real UIDs are a few dozen characters.
UID_MAX_CHARS = 512
# The properties read here: a value of one of them that icalendar could not parse makes the
# event unusable; a broken property the store ignores (an ATTENDEE, an X- extension) does not.
READ_PROPERTIES = frozenset(
    {"UID", "DTSTART", "DTEND", "DURATION", "RECURRENCE-ID", "RRULE", "SEQUENCE", "STATUS"}
)
# How much of a parser message or a UID an error quotes.
QUOTE_CHARS = 120

_BEGIN_END = re.compile(rb"^(BEGIN|END):([A-Za-z0-9-]+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class FeedEvent:
    """One VEVENT as the store keeps it (see the module doc for the normalization)."""

    uid: str
    recurrence_id: str
    summary: str
    description: str
    location: str
    starts_at: datetime
    ends_at: datetime
    all_day: bool
    rrule: str | None
    status: str
    sequence: int
    content_hash: str
    #: The times had no zone and were taken as UTC (not stored: the event's times say UTC).
    floating: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """(UID, RECURRENCE-ID): what identifies the event within its feed."""
        return (self.uid, self.recurrence_id)


def parse_feed(body: bytes) -> list[FeedEvent]:
    """The events of an iCalendar body, one per distinct (UID, RECURRENCE-ID), in feed order."""
    if not body.strip():
        raise FeedMalformed("the feed is empty")
    calendar = _calendar(body)
    lines = _vevent_lines(body)
    events: dict[tuple[str, str], tuple[FeedEvent, str]] = {}
    vevents = [c for c in calendar.subcomponents if isinstance(c, Event)]
    for index, component in enumerate(vevents):
        line = lines[index] if index < len(lines) else None
        where = f"VEVENT #{index + 1}" + (f" (line {line})" if line else "")
        event = _event(component, where)
        where = f"{where}, UID {_quoted(event.uid)}"
        known = events.get(event.key)
        if known is None or event.sequence > known[0].sequence:
            events[event.key] = (event, where)
        elif event.content_hash != known[0].content_hash and event.sequence == known[0].sequence:
            raise FeedMalformed(
                f"{where} repeats {known[1]} (RECURRENCE-ID {event.recurrence_id or 'none'}) "
                f"with different content and the same SEQUENCE {event.sequence}"
            )
    return [event for event, _where in events.values()]


def _calendar(body: bytes) -> Component:
    """The body's one VCALENDAR (icalendar's own warnings about guessed zones are accepted)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calendar = Calendar.from_ical(body)
    except Exception as exc:  # icalendar raises ValueError mostly, others on odd input
        raise FeedMalformed(f"not an iCalendar feed: {_quoted(str(exc))}") from None
    if calendar.name != "VCALENDAR":
        raise FeedMalformed(f"not an iCalendar feed: the top component is {calendar.name}")
    return calendar


def _vevent_lines(body: bytes) -> list[int]:
    """The line number of each VCALENDAR-level ``BEGIN:VEVENT``, in order (for errors)."""
    found: list[int] = []
    depth = 0
    for number, line in enumerate(body.splitlines(), start=1):
        match = _BEGIN_END.match(line)
        if match is None:
            continue
        if match[1].upper() == b"BEGIN":
            depth += 1
            if depth == 2 and match[2].upper() == b"VEVENT":
                found.append(number)
        else:
            depth -= 1
    return found


def _event(component: Event, where: str) -> FeedEvent:
    """One VEVENT, normalized; FeedMalformed naming ``where`` when it cannot be."""
    broken = [(name, message) for name, message in component.errors if name in READ_PROPERTIES]
    if broken:
        name, message = broken[0]
        raise FeedMalformed(f"{where}: {name} does not parse ({_quoted(str(message))})")
    uid = _text(component, "UID").strip()
    if not uid:
        raise FeedMalformed(f"{where}: no UID")
    if len(uid) > UID_MAX_CHARS:
        raise FeedMalformed(f"{where}: UID longer than {UID_MAX_CHARS} characters")
    where = f"{where}, UID {_quoted(uid)}"
    if component.get("DTSTART") is None:
        raise FeedMalformed(f"{where}: no DTSTART")
    try:
        start, end = component.start, component.end
    except Exception as exc:  # InvalidCalendar / IncompleteComponent: contradicting times
        raise FeedMalformed(f"{where}: {_quoted(str(exc))}") from None
    all_day = not isinstance(start, datetime)
    starts_at, start_floating = _utc(start)
    ends_at, end_floating = _utc(end)
    recurrence_id = _recurrence_id(component)
    fields: dict[str, Any] = {
        "uid": uid,
        "recurrence_id": recurrence_id,
        "summary": _text(component, "SUMMARY"),
        "description": _text(component, "DESCRIPTION"),
        "location": _text(component, "LOCATION"),
        "starts_at": starts_at,
        "ends_at": ends_at,
        "all_day": all_day,
        "rrule": _rrule(component),
        "status": _text(component, "STATUS").strip().upper(),
        "sequence": _sequence(component, where),
    }
    return FeedEvent(
        **fields, content_hash=content_hash(fields), floating=start_floating or end_floating
    )


def content_hash(fields: dict[str, Any]) -> str:
    """sha256 (hex) of an event's stored fields, in a fixed order and format."""
    values = [
        value.isoformat() if isinstance(value, datetime) else value
        for _name, value in sorted(fields.items())
    ]
    return hashlib.sha256(json.dumps(values, ensure_ascii=False).encode()).hexdigest()


def _utc(moment: date | datetime) -> tuple[datetime, bool]:
    """``moment`` as aware UTC, and whether it was floating (a date counts as midnight UTC)."""
    if not isinstance(moment, datetime):
        return datetime(moment.year, moment.month, moment.day, tzinfo=UTC), False
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC), True
    return moment.astimezone(UTC), False


def _recurrence_id(component: Component) -> str:
    """The RECURRENCE-ID as a UTC ISO string, or a date for all-day series ("" if none)."""
    prop = component.get("RECURRENCE-ID")
    if prop is None:
        return ""
    if isinstance(prop, list):  # repeated: the first one (RFC 5545 allows one)
        prop = prop[0]
    value = prop.dt
    if not isinstance(value, datetime):
        return str(value.isoformat())
    moment, _floating = _utc(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _rrule(component: Component) -> str | None:
    """The RRULE's text (``FREQ=WEEKLY;COUNT=5``); several (deprecated) one per line."""
    prop = component.get("RRULE")
    if prop is None:
        return None
    rules = prop if isinstance(prop, list) else [prop]
    return "\n".join(rule.to_ical().decode() for rule in rules)


def _sequence(component: Component, where: str) -> int:
    """SEQUENCE (0 when absent)."""
    prop = component.get("SEQUENCE")
    if prop is None:
        return 0
    if isinstance(prop, list):
        raise FeedMalformed(f"{where}: SEQUENCE given {len(prop)} times")
    return int(prop)


def _text(component: Component, name: str) -> str:
    """A text property's value ("" when absent; the first when repeated)."""
    prop = component.get(name)
    if prop is None:
        return ""
    if isinstance(prop, list):
        prop = prop[0] if prop else ""
    return str(prop)


def _quoted(text: str) -> str:
    """``text`` on one line, cut to QUOTE_CHARS, quoted for an error message."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= QUOTE_CHARS else flat[:QUOTE_CHARS] + "...")
