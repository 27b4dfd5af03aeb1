"""Acks that ride with the consumer's next fetch: one write and one round trip for both.

A worker acks a task when it ends (``acks_late``) and fetches the next one in the same turn of
its event loop. Sent apart, the ack is a blocking round trip of the main process's own: a
profile of a no-op drain put 17 % of the main process in it. Here an ack made on the event
loop's thread waits for the channel's next fetch, whose write carries it (the acks first, so
Redis removes them before it pops the next message); the fetch's reader reads their replies
first. An ack no fetch carries within ``BROKER_ACK_DELAY_S`` (an idle queue, a fetch still in
flight) goes alone, from a timer of the same loop.

An ack not yet sent is a message that would run again if the worker died meanwhile: the delay
is short, closing a channel sends what waits, and the acks a lost connection may not have
delivered are kept (:data:`UNSENT`) and sent after reconnecting, before anything this process
held is put back: an acked task never runs twice because its ack was late. Acks are idempotent
(the ACK script removes a message only while the consumer still owns it), so sending one twice
is harmless.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker import custody
from personal_assistant.workers.broker.custody import CustodyKeys

# Acks of this process's consumers that may not have reached Redis (consumer id, tag): a closed
# channel's, or those in flight when a connection dropped. Per process, as channels come and go
# with connections; sent by the first reclaim after reconnecting (send_unsent).
UNSENT: list[tuple[str, str]] = []


def on_loop_thread(hub: Any) -> bool:
    """True when called on the thread that runs ``hub``'s loop (the worker's consumer)."""
    return hub is not None and threading.get_ident() == getattr(hub, "_loop_thread", None)


class DeferredAcks:
    """The acks of one channel waiting for its next fetch, and those riding with it."""

    def __init__(self, keys: CustodyKeys, consumer_id: str) -> None:
        self.keys = keys
        self.consumer_id = consumer_id
        self.waiting: list[str] = []  # acked, to go out with the next fetch
        self.in_flight: list[str] = []  # went out with the fetch in flight, replies unread
        self._timer_armed = False

    def defer(self, tag: str, hub: Any, send_waiting: Callable[[], None]) -> None:
        """Hold ``tag``'s ack for the next fetch; ``send_waiting`` sends it if none comes
        within ``BROKER_ACK_DELAY_S``."""
        self.waiting.append(tag)
        if not self._timer_armed:
            self._timer_armed = True
            hub.call_later(c.BROKER_ACK_DELAY_S, self._on_timer, send_waiting)

    def _on_timer(self, send_waiting: Callable[[], None]) -> None:
        self._timer_armed = False
        send_waiting()

    def take_waiting(self) -> list[str]:
        """The waiting acks, now the caller's to send."""
        tags, self.waiting = self.waiting, []
        return tags

    def ride_with_fetch(self) -> list[tuple[Any, ...]]:
        """The ACK commands to send ahead of a fetch, in the same write."""
        self.in_flight = self.take_waiting()
        return [custody.ack_command(self.keys, tag, self.consumer_id) for tag in self.in_flight]

    def read_replies(self, read_one: Callable[[], Any], connection_errors: Any) -> list[str]:
        """Read the replies of the acks that rode with the fetch (they come before the
        fetch's); return the tags Redis did not run for want of the script (a restart)."""
        tags, self.in_flight = self.in_flight, []
        forgotten: list[str] = []
        for done, tag in enumerate(tags):
            try:
                read_one()
            except redis.exceptions.NoScriptError:
                forgotten.append(tag)
            except connection_errors:
                # Run or not, unknown: they go again after reconnecting.
                self.lost([*forgotten, *tags[done:]])
                raise
        return forgotten

    def lost(self, tags: Iterable[str]) -> None:
        """Keep acks that may not have reached Redis, for the reclaim after reconnecting."""
        UNSENT.extend((self.consumer_id, tag) for tag in tags)


def send_unsent(client: redis.Redis, keys: CustodyKeys) -> None:
    """Send the acks :data:`UNSENT` holds (before any reclaim puts messages back)."""
    if not UNSENT:
        return
    unsent = list(UNSENT)
    by_consumer: dict[str, list[str]] = {}
    for consumer, tag in unsent:
        by_consumer.setdefault(consumer, []).append(tag)
    for consumer, tags in by_consumer.items():
        custody.ack_many(client, keys, tags, consumer)
    del UNSENT[: len(unsent)]
