"""Celery's Redis result backend, storing a state in one round trip instead of two.

Celery's key-value backend stores a task's state in two round trips: a GET of the state stored
so far (a SUCCESS is never overwritten: a lost worker's late redelivery must not replace the
result of the run that finished), then SET (with its expiry) and PUBLISH in a pipeline. For a
short task that is most of the pool child's time: a profile of a no-op task put 71 % of the
child in ``store_result``, half of it in the GET. Here the same three steps run in one Lua
script, so Redis checks and writes in one step (also closing the window between Celery's GET
and SET in which another worker's SUCCESS could land and be overwritten).

Publishing does not subscribe. Celery's Redis backend SUBSCRIBEs to a task's result channel
when the task is sent (and UNSUBSCRIBEs when its ``AsyncResult`` is collected): two round trips
more per published task, for a ``get()`` that most producers never make, and a subscription
kept per task by a producer that keeps its results (measured: a send cost 3 round trips, 1
needed). Here the subscription is made when someone waits (``get()``, ``then()``), and the
state stored before it is read right after it, so nothing published earlier is missed.

A workflow task's STARTED state (workflows/hook.py) is written without waiting: the command is
sent and its reply read just before the task's next store on the backend, so Redis has applied
it before anything after it, and the hop to the next task does not wait a round trip for a state
only ``workflow status`` reads. Lost with its connection, it costs nothing but the display.

What is stored and published is byte for byte Celery's (its own ``_get_result_meta`` and
``encode``), with the same expiry, the same retries on connection errors (``ensure``) and the
same size limit; everything else (reading results, chords, groups) is Celery's ``RedisBackend``.
Only the plain Redis backend is replaced: Sentinel, other backends and subclasses stay as
configured.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import redis
from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

logger = logging.getLogger(__name__)

__all__ = ["STORE_SCRIPT", "LeanRedisBackend", "backend_class_for"]

# KEYS: the task's result key.  ARGV: the encoded meta, seconds to expire (0: never).
# Returns 0 when a SUCCESS is stored already (left as it is), 1 when written and published.
# A stored value that is not a JSON object (another serializer, a hand-written key) is
# overwritten, as Celery's GET-then-SET does when it cannot read a SUCCESS in it.
STORE_SCRIPT: Final = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
    return 0
  end
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


class LeanRedisBackend(RedisBackend):  # type: ignore[misc]
    """:class:`celery.backends.redis.RedisBackend` with a one-round-trip store (module doc)."""

    _store_script: Any = None
    _started_in_flight: Any = None  # the connection whose STARTED reply is still unread

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        self._finish_started()
        value = self._encoded(task_id, result, state, traceback, request)
        expires = self.failure_expires if state == states.FAILURE else self.expires
        self.ensure(self._store_once, (self.get_key_for_task(task_id), value, expires or 0))
        return result

    def _encoded(
        self, task_id: str, result: Any, state: str, traceback: Any, request: Any
    ) -> bytes | str:
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError(
                "value too large for Redis backend", state=state, task_id=task_id
            )
        return value  # type: ignore[no-any-return]

    def store_started_soon(self, task_id: str, result: Any, request: Any = None) -> None:
        """Store STARTED for ``task_id`` without waiting for the reply (module doc)."""
        self._finish_started()
        value = self._encoded(task_id, result, states.STARTED, None, request)
        script = self._script()
        pool = self.client.connection_pool
        connection = pool.get_connection()
        try:
            if not getattr(connection, "pa_store_loaded", False):
                # Once per connection: EVALSHA of a script Redis does not know fails, and the
                # reply is read too late to send EVAL instead.
                connection.send_command("SCRIPT", "LOAD", STORE_SCRIPT)
                connection.read_response()
                connection.pa_store_loaded = True
            key = self.get_key_for_task(task_id)
            connection.send_command("EVALSHA", script.sha, 1, key, value, int(self.expires or 0))
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            logger.debug("STARTED of %s not stored", task_id, exc_info=True)
            connection.disconnect()
            pool.release(connection)
            return
        self._started_in_flight = connection

    def _finish_started(self) -> None:
        """Read the reply of the STARTED in flight, if any, and give its connection back."""
        connection, self._started_in_flight = self._started_in_flight, None
        if connection is None:
            return
        try:
            connection.read_response()
        except redis.ResponseError:
            logger.debug("STARTED refused by Redis", exc_info=True)
        except (redis.ConnectionError, redis.TimeoutError):
            connection.disconnect()
        finally:
            self.client.connection_pool.release(connection)

    def _script(self) -> Any:
        # register_script: EVALSHA, and EVAL once after Redis forgot it (a restart).
        if self._store_script is None:
            self._store_script = self.client.register_script(STORE_SCRIPT)
        return self._store_script

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Publishing subscribes to nothing (module doc): a waiter subscribes when it waits."""

    def _add_pending_result(self, task_id: str, result: Any, weak: bool = False) -> None:
        super()._add_pending_result(task_id, result, weak)
        # Subscribed only now: a state published before this moment is read from its key
        # (Celery's get() reads it too; then() would otherwise wait for a message gone by).
        self.result_consumer.on_wait_for_pending(result)

    def _store_once(self, key: bytes | str, value: bytes | str, expires: float) -> int:
        return int(self._script()(keys=[key], args=[value, int(expires)]))


def backend_class_for(configured: type) -> type:
    """The backend class to use in place of ``configured`` (Celery's choice for the URL)."""
    return LeanRedisBackend if configured is RedisBackend else configured
