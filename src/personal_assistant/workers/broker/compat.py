"""Refuse to start on a kombu whose internals the workflow outbox cannot rely on.

The workflow outbox (workflows/outbox.py) publishes a ready task in the same Redis transaction
that records it ready: it hands the producer a private publish batch
(``Producer._batch_local.current``, new in kombu 5.7), and the Redis channel's ``_put`` turns
the message into commands on that batch (the ``_publish_batch`` keyword) instead of running the
LPUSH. kombu 5.6 and older have neither; a later kombu may change them without notice, being
private. On such a kombu the outbox would either fall back to a publish outside the commit (a
crash between the two loses or duplicates a task) or, worse, publish twice. So the app checks
at creation, before any worker, beat or command runs, and stops with one line saying what to
install.

The check is by version and by feature: a kombu in the supported range whose internals are not
as expected (a patched or vendored copy) is refused too. Each feature is probed without a
connection: a producer on a stand-in channel must route its publish into the batch it is
handed, and the Redis channel's ``_put`` must consume the ``_publish_batch`` keyword.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Final

import kombu
from kombu.messaging import Producer
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from personal_assistant.workers.config import ConfigError

# The kombu releases this package runs on: the minor series whose private publish batch the
# outbox was written against and tested with. Keep in step with pyproject.toml's "kombu"
# requirement (a unit test compares the two).
KOMBU_SUPPORTED_MIN: Final[tuple[int, int]] = (5, 7)
KOMBU_SUPPORTED_BELOW: Final[tuple[int, int]] = (5, 8)
KOMBU_REQUIREMENT: Final[str] = (
    f"kombu>={KOMBU_SUPPORTED_MIN[0]}.{KOMBU_SUPPORTED_MIN[1]},"
    f"<{KOMBU_SUPPORTED_BELOW[0]}.{KOMBU_SUPPORTED_BELOW[1]}"
)

_WHY: Final[str] = (
    "the workflow outbox's exactly-once publish uses kombu internals that differ in other versions"
)
_FIX: Final[str] = f"pip install '{KOMBU_REQUIREMENT}'"

PRODUCER_BATCH: Final[str] = "Producer._batch_local (the producer's publish batch)"
CHANNEL_BATCH: Final[str] = "the _publish_batch keyword of the Redis channel's _put"


def installed_kombu_version() -> str:
    """The version of the kombu this process imported (not what some other path holds)."""
    return str(kombu.__version__)


def parse_version(version: str) -> tuple[int, ...]:
    """The leading numeric release of ``version``: ``"5.7.0rc1"`` -> ``(5, 7, 0)``.

    Only the release matters for the range; the packaging library is not a dependency.
    """
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    if match is None:
        return ()
    return tuple(int(part) for part in match.group().split("."))


def version_supported(version: str) -> bool:
    """True when ``version`` lies in ``[KOMBU_SUPPORTED_MIN, KOMBU_SUPPORTED_BELOW)``."""
    release = parse_version(version)
    return bool(release) and KOMBU_SUPPORTED_MIN <= release < KOMBU_SUPPORTED_BELOW


class _StandInChannel:
    """Just enough of a channel for ``Producer.publish``; a direct publish is recorded, since
    with a batch in place there must be none."""

    def __init__(self) -> None:
        self.direct_publishes = 0

    def prepare_message(self, body: Any, *args: Any) -> dict[str, Any]:
        return {"body": body}

    def basic_publish(self, message: Any, **kwargs: Any) -> None:
        self.direct_publishes += 1


class _RecordingBatch:
    """Stands in for the outbox's batch: records the publish the producer routes to it."""

    def __init__(self) -> None:
        self.published: list[tuple[Any, Any]] = []

    def publish(self, channel: Any, message: Any, **kwargs: Any) -> None:
        self.published.append((channel, message))


def producer_routes_into_batch() -> bool:
    """True when a producer handed a batch through ``_batch_local.current`` publishes into it
    and not on its channel: what ``outbox.capture`` does, tried on a stand-in channel."""
    channel = _StandInChannel()
    batch = _RecordingBatch()
    try:
        producer = Producer(None)
        producer._channel = channel  # no connection: the probe must not dial anything
        producer._batch_local.current = batch
        try:
            producer.publish({}, routing_key="kombu-compat-probe", serializer="json")
        finally:
            del producer._batch_local.current
    except Exception:  # any other shape of Producer's internals is "not the feature"
        return False
    return channel.direct_publishes == 0 and [c for c, _ in batch.published] == [channel]


def redis_channel_takes_batch() -> bool:
    """True when kombu's Redis channel passes publish keywords through to ``_put`` and its
    ``_put`` consumes ``_publish_batch`` (popped from ``**kwargs``, so no signature shows it;
    the keyword is read from the function's constants instead)."""
    publish = getattr(virtual.Channel, "basic_publish", None)
    put = getattr(kombu_redis.Channel, "_put", None)
    code = getattr(put, "__code__", None)
    if publish is None or code is None:
        return False
    parameters = inspect.signature(publish).parameters.values()
    forwards = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    return forwards and "_publish_batch" in code.co_consts


def missing_kombu_features() -> list[str]:
    """The kombu internals the outbox needs that the installed kombu lacks (empty: all there)."""
    missing = []
    if not producer_routes_into_batch():
        missing.append(PRODUCER_BATCH)
    if not redis_channel_takes_batch():
        missing.append(CHANNEL_BATCH)
    return missing


def check_kombu() -> None:
    """Raise :class:`ConfigError` (one line: what is installed, what is needed, how to fix it)
    when the installed kombu is outside the supported range or lacks what the outbox uses."""
    version = installed_kombu_version()
    if not version_supported(version):
        raise ConfigError(
            f"kombu {version} is installed; this package needs {KOMBU_REQUIREMENT}: {_WHY}; {_FIX}"
        )
    missing = missing_kombu_features()
    if missing:
        raise ConfigError(
            f"kombu {version} is installed but lacks {' and '.join(missing)}: {_WHY}; "
            f"this package needs {KOMBU_REQUIREMENT} as released; {_FIX} --force-reinstall"
        )
