"""kombu's Redis transport with a reliable fetch: a message is never outside Redis's custody.

kombu's consumer BRPOPs a message off its queue list and writes it to ``unacked`` in a second
round trip; a worker killed in between, or whose connection drops with the reply unread, loses
the message, ``acks_late`` or not (celery#4354, kombu#1836). Here the consumer runs a script
that pops the message and records it in ``unacked`` in one atomic step (scripts.py), so from
the queue until its ack the message is always in Redis. What stays as kombu has it: the lists
(one per queue and priority step; priority.py), the ``unacked`` hash and index, the visibility
timeout, ``purge``, ``inspect`` and the queue-length metrics; messages queued by older versions
are consumed as they are.

Waiting without polling: a script cannot block, so a consumer whose last fetch found nothing
sends ``BLPOP`` on its queues' *wake lists* followed by the fetch, in one write. Producers push
a token to the wake list with every message (same round trip), so a blocked consumer wakes at
once; a message from a producer that does not (plain kombu) waits at most ``brpop_timeout``
(1 s), after which the fetch runs anyway. Only task messages carry a token (replies and events
are read by no-ack consumers, which keep kombu's BRPOP). The fetch deletes the wake lists it
finds empty, so tokens never outnumber the task messages queued since.

Consumers beat (custody.py); the messages of one that stopped beating are put back after
``dead_after`` seconds. A channel closed on a lost connection is reclaimed by this process as
soon as it reconnects. No-ack consumers (reply queues) keep kombu's BRPOP: they ack nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

from personal_assistant.workers import constants as c
from personal_assistant.workers import keys as keyspace
from personal_assistant.workers.broker import custody, deferred_acks
from personal_assistant.workers.broker.custody import WAKE_TTL_MS, CustodyKeys
from personal_assistant.workers.broker.deferred_acks import DeferredAcks
from personal_assistant.workers.broker.poison import envelope_for, make_printable
from personal_assistant.workers.broker.priority import PriorityChannel

logger = logging.getLogger(__name__)

TRANSPORT_PATH = f"{__name__}:ReliableRedisTransport"

# Consumers of this process whose channel closed before it could give its messages back (the
# connection was lost). The channel opened on reconnect puts them back at once. Per process:
# channels come and go with connections, and the pool children consume nothing.
_ABANDONED: set[str] = set()
# A silence no consumer reaches: "dead by heartbeat" finds nobody, only the ids passed.
_NEVER = 1e12


class ReliableQoS(kombu_redis.QoS):
    """kombu's ack emulation, with acks and restores checked against the message's owner."""

    channel: ReliableChannel

    def append(self, message: Any, delivery_tag: str) -> None:
        """Track a delivered message; the fetch already wrote it to ``unacked``."""
        if self.channel.take_fetched(delivery_tag):
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)  # delivered some other way (fanout)

    def ack(self, delivery_tag: str) -> None:
        """Remove the message from custody (if this consumer still owns it), with the next
        fetch when that follows within ``BROKER_ACK_DELAY_S``."""
        self.channel.release_soon(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Requeue the message (if this consumer still holds it), or drop it from custody."""
        if requeue:
            self.channel.restore_tag(delivery_tag, leftmost=True, only_mine=True)
        else:
            self.channel.release(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def restore_by_tag(self, tag: str, client: Any = None, leftmost: bool = False) -> None:
        """Put one message back on its queue, once, whoever holds it (visibility timeout)."""
        self.channel.restore_tag(tag, leftmost=leftmost)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        """Put back dead consumers' messages, then kombu's visibility scan."""
        self.channel.maybe_reclaim()
        super().restore_visible(start, num, interval)


class ReliableChannel(PriorityChannel):
    """A Redis channel whose consumer fetches atomically (see the module doc)."""

    QoS = ReliableQoS

    from_transport_options = (  # type: ignore[assignment]
        *PriorityChannel.from_transport_options,
        "max_message_bytes",
        "poison_keep_bytes",
        "consumer_dead_after",
    )
    unacked_restore_interval: int
    max_message_bytes: int = c.BROKER_MAX_MESSAGE_BYTES
    poison_keep_bytes: int = c.DLQ_MAX_FIELD_CHARS
    consumer_dead_after: float = c.WORKER_DOWN_AFTER_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.consumer_id = custody.new_consumer_id()
        self._fetched: set[str] = set()
        self._no_ack_queues: set[str] = set()
        self._pending = 0  # replies of our own commands still unread on the BRPOP connection
        self._idle = False  # the last fetch found nothing: block on the wake lists next time
        self._fetch_queues: list[str] = []
        self._sync_client: redis.Redis | None = None
        self._reclaim_due = 0.0
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("the reliable Redis transport does not support global_keyprefix")
        self.keys = CustodyKeys(self.unacked_key, self.unacked_index_key)
        self.acks = DeferredAcks(self.keys, self.consumer_id)

    # -- one client for everything synchronous (kombu builds a new one per call) -------------
    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """The given client, else this channel's own (kept across pool resets, so a late ack
        or a restore at close still reaches Redis through a fresh connection)."""
        if client is not None:
            yield client
            return
        own = self._own_client()
        try:
            yield own
        finally:
            if self.closed:
                # A late ack or restore of a closed channel: no socket may outlive the call.
                own.connection_pool.disconnect()

    def _own_client(self) -> redis.Redis:
        # Made while the channel is open (its first fetch makes it), so that kombu's close,
        # which drops the channel's pools and then its connection, does not prevent it.
        if self._sync_client is None:
            self._sync_client = self._create_client()
        return self._sync_client

    # -- consuming ---------------------------------------------------------------------------
    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        """Consume ``queue``; no-ack consumers keep kombu's plain BRPOP."""
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _reliable(self) -> bool:
        return not any(queue in self._no_ack_queues for queue in self.active_queues)

    @property
    def consuming_reliably(self) -> bool:
        """True while this channel fetches into custody (it beats and reclaims then)."""
        return bool(self.active_queues) and self._reliable() and not self.closed

    def _brpop_start(self, timeout: float | None = None) -> None:
        if not self._reliable():
            super()._brpop_start(timeout)
            return
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        self._own_client()
        if (_ABANDONED or deferred_acks.UNSENT) and self._reclaim_due == 0.0:
            # This process lost a connection: what its old channel held goes back now, not at
            # the first restore interval (10 s by default).
            try:
                self.maybe_reclaim()
            except self.connection_errors:
                logger.debug("reclaim after reconnecting failed; retried later", exc_info=True)
        wait = self.brpop_timeout if timeout is None else timeout
        lists = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        commands: list[tuple[Any, ...]] = []
        if self._idle:
            # A blocking wait would hold the acks' replies behind it: they go out alone.
            self.flush_acks()
            commands.append(("BLPOP", *(keyspace.broker_wake_key(q) for q in queues), wait or 0))
        commands.append(self._fetch_command(lists, queues))
        connection = self.client.connection
        self._in_poll = connection
        self._brpop_sent_at = time.monotonic()  # type: ignore[assignment]
        self._fetch_queues = list(queues)
        self._pending = len(commands)
        commands[:0] = self.acks.ride_with_fetch()
        connection.send_packed_command(connection.pack_commands(commands))

    def _fetch_command(self, lists: list[str], queues: list[str]) -> tuple[Any, ...]:
        return custody.fetch_command(
            self.keys,
            lists,
            queues,
            now=time.time(),
            consumer=self.consumer_id,
            max_bytes=self.max_message_bytes,
            keep_bytes=self.poison_keep_bytes,
        )

    def _brpop_read(self, **options: Any) -> bool:
        if not self._pending:
            return bool(super()._brpop_read(**options))
        try:
            reply = self._read_fetch(**options)
            if not reply:
                self._idle = True
                raise virtual.Empty()
            self._idle = False
            self._deliver_fetched(reply)
            return True
        finally:
            self._pending = 0
            self._in_poll = None  # type: ignore[assignment]  # kombu types it bool, stores a connection
            self._flush_brpop_reauth()

    def _read_fetch(self, **options: Any) -> Any:
        connection = self.client.connection
        forgotten = self.acks.read_replies(
            lambda: self.client.parse_response(connection, "EVALSHA", **options),
            self.connection_errors,
        )
        if forgotten:  # Redis restarted: sent again, with the script
            self._send_acks(forgotten)
        try:
            if self._pending == 2:
                self.client.parse_response(connection, "BLPOP", **options)
            return self.client.parse_response(connection, "EVALSHA", **options)
        except redis.exceptions.NoScriptError:
            # Redis restarted (or SCRIPT FLUSH): load the scripts, fetch on the next tick.
            with self.conn_or_acquire() as client:
                client.script_load(custody.FETCH.text)
            raise virtual.Empty() from None
        except self.connection_errors:
            connection.disconnect()
            raise
        except redis.exceptions.ResponseError as exc:
            # A queue key of the wrong type, a script refused: nothing was popped (a script
            # that fails stops before its first write here). Wait on the wake lists next time,
            # so a lasting error costs a log line a second, not a busy loop.
            logger.error("fetch from %s failed: %s", ", ".join(self._fetch_queues), exc)
            self._idle = True
            raise virtual.Empty() from None

    def _deliver_fetched(self, reply: Any) -> None:
        number, raw_tag, item = reply
        tag = raw_tag.decode() if isinstance(raw_tag, bytes) else str(raw_tag)
        queues = self._fetch_queues
        queue = queues[(int(number) - 1) % len(queues)]
        self._queue_cycle.rotate(queue)
        payload = make_printable(_decode(item))
        if payload is None:
            payload = envelope_for(item, tag, queue, "the message is not valid UTF-8 JSON")
        self._fetched.add(tag)
        try:
            self.connection._deliver(payload, queue)
        except Exception:
            if tag not in self._fetched:
                raise  # Celery's own handler failed after the message was accepted
            # kombu could not even build a Message of it: deliver it as poison instead.
            logger.warning("message %s on %s is unreadable; rejecting it", tag, queue)
            self.connection._deliver(envelope_for(item, tag, queue, "unreadable message"), queue)

    def take_fetched(self, tag: str) -> bool:
        """True (once) when ``tag`` came from this channel's fetch: its custody is written."""
        try:
            self._fetched.remove(tag)
        except KeyError:
            return False
        return True

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """One message, fetched into custody like a consumed one (kombu's RPOPs otherwise)."""
        if no_ack:
            return super().basic_get(queue, no_ack, **kwargs)
        lists = [self._q_for_pri(queue, pri) for pri in self.priority_steps]
        with self.conn_or_acquire() as client:
            reply = custody.fetch(client, self._fetch_command(lists, [queue]))
        if not reply:
            return None
        _, raw_tag, item = reply
        tag = raw_tag.decode() if isinstance(raw_tag, bytes) else str(raw_tag)
        payload = make_printable(_decode(item)) or envelope_for(
            item, tag, queue, "unreadable message"
        )
        message = self.Message(payload, channel=self)
        virtual.QoS.append(self.qos, message, message.delivery_tag)
        return message

    # -- custody -----------------------------------------------------------------------------
    def release(self, tag: str) -> None:
        """Drop ``tag`` from custody if this channel owns it (ack, reject without requeue)."""
        with self.conn_or_acquire() as client:
            custody.ack(client, self.keys, tag, self.consumer_id)

    def release_soon(self, tag: str) -> None:
        """:meth:`release`, sent with this channel's next fetch in one write (one round trip
        for both), or alone after ``BROKER_ACK_DELAY_S``. At once when called off the event
        loop's thread (the threads pool acks from its own) or without a loop (a synchronous
        consumer): only the loop's own turn sends the fetch that would carry it."""
        hub = getattr(self.connection, "ack_loop", None)
        if self.closed or not deferred_acks.on_loop_thread(hub):
            self.release(tag)
        else:
            self.acks.defer(tag, hub, self.flush_acks)

    def flush_acks(self) -> None:
        """Send the acks no fetch has carried yet (deferred_acks.py)."""
        tags = self.acks.take_waiting()
        if tags and self.closed:
            self.acks.lost(tags)
        elif tags:
            self._send_acks(tags)

    def _send_acks(self, tags: list[str]) -> None:
        try:
            with self.conn_or_acquire() as client:
                custody.ack_many(client, self.keys, tags, self.consumer_id)
        except Exception:
            self.acks.lost(tags)  # for the reclaim after reconnecting
            raise

    def restore_tag(self, tag: str, *, leftmost: bool = False, only_mine: bool = False) -> bool:
        """Put ``tag`` back on its queue if still held as read now; True when this call did."""
        with self.conn_or_acquire() as client:
            entry, owner = custody.read_entry(client, self.keys, tag)
            if entry is None:
                return False
            if only_mine and owner and custody.owner_id(owner) != self.consumer_id:
                return False  # redelivered meanwhile: another consumer owns it now
            return self._restore_entry(client, tag, owner, entry, leftmost=leftmost)

    def _restore_entry(
        self, client: Any, tag: str, owner: str, entry: bytes, *, leftmost: bool
    ) -> bool:
        decoded = _decode(entry)
        if not isinstance(decoded, list) or len(decoded) != 3:
            logger.error("unacked entry %s is unreadable; left for inspection", tag)
            return False
        payload, exchange, routing_key = decoded
        _mark_redelivered(payload)
        destinations = [
            (
                self._q_for_pri(queue, self._get_message_priority(payload)),
                keyspace.broker_wake_key(queue),
            )
            for queue in self._lookup(exchange, routing_key)
        ]
        return custody.move(
            client,
            self.keys,
            tag,
            owner=owner,
            entry=entry,
            payload=_encode(payload),
            destinations=destinations,
            leftmost=leftmost,
        )

    def _restore(self, message: Any, leftmost: bool = False) -> None:
        # kombu's restore of this channel's delivered-but-unacked messages (at close).
        self.restore_tag(message.delivery_tag, leftmost=leftmost, only_mine=True)

    def _do_restore_message(
        self, payload: Any, exchange: str, routing_key: str, pipe: Any, leftmost: bool = False
    ) -> None:
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        for queue in self._lookup(exchange, routing_key):
            pipe.lpush(keyspace.broker_wake_key(queue), "")
            pipe.pexpire(keyspace.broker_wake_key(queue), WAKE_TTL_MS)

    def maybe_reclaim(self) -> int:
        """:meth:`reclaim_orphans`, at most once per restore interval (the sync poll path
        calls this after every empty poll)."""
        now = time.monotonic()
        if not self.consuming_reliably or now < self._reclaim_due:
            return 0
        self._reclaim_due = now + float(self.unacked_restore_interval)
        return self.reclaim_orphans()

    def reclaim_orphans(self) -> int:
        """Put back the messages of consumers that stopped beating; return how many."""
        mine = _live_consumers(self.connection)
        with self.conn_or_acquire() as client:
            deferred_acks.send_unsent(client, self.keys)
            custody.beat(client, self.keys, mine)
            abandoned = sorted(_ABANDONED - set(mine))
            dead, held = custody.orphans(client, self.keys, self.consumer_dead_after, abandoned)
            dead = [consumer for consumer in dead if consumer not in mine]
            moved = sum(
                self._restore_entry(client, o.tag, o.owner, o.entry, leftmost=False)
                for o in held
                if custody.owner_id(o.owner) in dead
            )
            custody.forget(client, self.keys, dead)
        _ABANDONED.difference_update(dead)
        if moved:
            logger.warning(
                "put back %d message(s) held by %d stopped consumer(s)", moved, len(dead)
            )
        return moved

    # -- publishing --------------------------------------------------------------------------
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """LPUSH the message and, for a task, a wake token for blocked consumers, in one
        round trip."""
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        body = dumps(message)
        expires = self._expires.get(queue) if self._expires else None
        batch = kwargs.pop("_publish_batch", None)
        commands: list[tuple[Any, ...]] = [("lpush", key, body)]
        if _is_task_message(message):
            # Only task queues have consumers blocked on a wake list (the worker's). A reply
            # or event queue is read by a no-ack consumer (kombu's BRPOP) and needs none.
            commands.append(("lpush", keyspace.broker_wake_key(queue), ""))
        if expires:
            lists = [self._q_for_pri(queue, step) for step in self.priority_steps]
            commands += [("pexpire", name, expires) for name in lists]
        if batch is not None:
            for name, *args in commands:
                batch.add(name, *args)
            return
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            for name, *args in commands:
                getattr(pipe, name)(*args)
            pipe.execute()

    # -- closing -----------------------------------------------------------------------------
    def close(self) -> None:
        """Give back what this channel holds; if Redis cannot be reached, leave it to the
        reclaim (by this process after it reconnects, else by any worker after dead_after)."""
        if self.closed:
            return
        if self._in_poll and self._pending:
            try:
                with contextlib.suppress(virtual.Empty):  # a fetch that found nothing
                    self._brpop_read()
            except Exception:  # the connection is gone: the reply with it
                self._in_poll = None  # type: ignore[assignment]  # kombu types it bool, stores a connection
        # Before anything goes back: a message acked but not yet sent is done, not held.
        with contextlib.suppress(Exception):  # kept in deferred_acks.UNSENT for the reclaim
            self.flush_acks()
        fetched = self._sync_client is not None  # it never fetched into custody otherwise
        super().close()  # kombu restores what it delivered (and logs what it could not)
        if not fetched:
            return
        try:
            with self.conn_or_acquire() as client:
                _, orphans = custody.orphans(client, self.keys, _NEVER, [self.consumer_id])
                for o in orphans:
                    self._restore_entry(client, o.tag, o.owner, o.entry, leftmost=False)
                custody.forget(client, self.keys, [self.consumer_id])
        except Exception as exc:
            _ABANDONED.add(self.consumer_id)
            logger.warning(
                "could not give back the messages this connection held (%s): they go back when "
                "this worker reconnects, or by another worker within %.0fs",
                exc,
                self.consumer_dead_after,
            )


class ReliableRedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`ReliableChannel` and consumer heartbeats."""

    Channel = ReliableChannel
    #: The worker's event loop, once registered with one (None: a synchronous consumer).
    ack_loop: Any = None

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """kombu's timers, plus a heartbeat of this connection's consumers."""
        super().register_with_event_loop(connection, loop)
        # The loop whose turns send fetches: acks made on its thread ride along with them.
        self.ack_loop = loop
        interval = float(
            connection.client.transport_options.get(
                "consumer_beat_interval", c.HEARTBEAT_INTERVAL_S
            )
        )
        old = getattr(self, "_beat_tref", None)
        if old is not None:
            old.cancel()
        self._beat_tref = loop.call_repeatedly(interval, self._beat)

    def _beat(self) -> None:
        live = _live_consumers(self)
        channels = [ch for ch in self.channels if isinstance(ch, ReliableChannel)]
        if not live or not channels:
            return
        try:
            with channels[0].conn_or_acquire() as client:
                custody.beat(client, channels[0].keys, live)
        except self.connection_errors:
            logger.debug("consumer heartbeat failed; retried next interval", exc_info=True)


def _is_task_message(message: Any) -> bool:
    headers = message.get("headers") if isinstance(message, dict) else None
    return isinstance(headers, dict) and "task" in headers


def _live_consumers(transport: Any) -> list[str]:
    """Ids of the channels of ``transport`` that fetch into custody now."""
    channels = getattr(transport, "channels", None) or []
    return [
        ch.consumer_id
        for ch in channels
        if isinstance(ch, ReliableChannel) and ch.consuming_reliably
    ]


def _decode(item: bytes | str) -> Any:
    """JSON from Redis, or None. Bytes that are not UTF-8 survive as surrogates (a poison
    envelope keeps a raw prefix of them), so decoding never fails on encoding alone."""
    text = item.decode("utf-8", "surrogateescape") if isinstance(item, bytes) else item
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _encode(payload: Any) -> bytes:
    """JSON bytes of a payload read by :func:`_decode`, with its undecodable bytes as they were
    (kombu's ``dumps`` would write them as ``\\udcXX`` escapes, which Redis's decoder refuses:
    a poison envelope put back would come back as a poison of a poison)."""
    return json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogateescape")


def _mark_redelivered(payload: Any) -> None:
    # As kombu's _do_restore_message: consumers can tell a redelivery from a first delivery.
    with contextlib.suppress(KeyError, TypeError):  # not a kombu message: left as it is
        payload["headers"][keyspace.REDELIVERED_HEADER] = True
        payload["properties"]["delivery_info"][keyspace.REDELIVERED_HEADER] = True
