"""The Lua scripts of the reliable fetch: every step that moves a message runs inside Redis.

A message is always in exactly one of two places, both in Redis: a queue list, or kombu's
``unacked`` hash (with its ``unacked_index`` score). kombu's own transport moves it from the
first to the second in two round trips (BRPOP, then HSET/ZADD), and a consumer that dies in
between loses it. Here each move is one script, so Redis runs it alone and whole:

- ``FETCH`` pops the first message of the consumer's lists (in kombu's order: priority step by
  step, queue by queue) and writes it to ``unacked`` in the same step, with its owner (the
  consumer and a per-delivery nonce). A body that is not a kombu message (not JSON, no delivery
  tag, over the size limit) is wrapped in a *poison envelope* first, so it is kept like any
  other message and reaches the dead-letter queue through the worker (poison.py).
- ``ACK`` removes a message from ``unacked``, but only if the caller still owns it: after a
  redelivery another consumer owns the tag, and a late ack must not remove its copy.
- ``MOVE`` puts a message back on its queue if it is still held exactly as the caller read it
  (same owner and nonce, or for entries without an owner, the same bytes), so two workers
  restoring the same message at once push it once.
- ``ORPHANS`` lists the messages whose consumer stopped beating, for the reclaim step.
- ``BEAT`` records that consumers are alive (Redis's clock, so hosts' clocks may disagree).

``allow-oom``: a full Redis (``noeviction``) refuses scripts that write, unless they say so.
Consumers must be able to drain a full server: a fetch frees a list entry for each hash entry
it writes, and acks only delete. The flag needs Redis 7 (safety.py refuses older servers).
"""

from __future__ import annotations

from string import Template
from typing import Final

from personal_assistant.workers import keys


def _lua(text: str) -> str:
    """``text`` as a Lua string literal (header names are plain ASCII: anything else is a bug)."""
    if not (text.isascii() and text.isprintable()) or "'" in text or "\\" in text:
        raise ValueError(f"not a plain name for a Lua literal: {text!r}")
    return f"'{text}'"


# KEYS: unacked, unacked_index, owner, consumers, then the lists (priority-major, as kombu's
#       BRPOP orders them), then one wake list per queue.
# ARGV: now (the client's clock, kombu's index score), consumer id, max message bytes, bytes of a
#       poison body kept, number of queues, then the queue names.
# Returns false when every list is empty (and deletes the wake lists: nothing to wake for), else
# {list number, delivery tag, message}: the message as stored, or its poison envelope.
# The poison envelope's header names and content type are keys.py's, substituted below.
FETCH: Final = Template("""#!lua flags=allow-oom
local n = tonumber(ARGV[5])
local nlists = #KEYS - 4 - n
local clock = redis.call('TIME')
redis.call('ZADD', KEYS[4], tonumber(clock[1]) + tonumber(clock[2]) / 1e6, ARGV[2])
for i = 1, nlists do
  local item = redis.call('RPOP', KEYS[4 + i])
  if item then
    local queue = ARGV[5 + ((i - 1) % n) + 1]
    local tag, stored, reason
    if #item > tonumber(ARGV[3]) then
      reason = 'too_large'
    else
      local ok, msg = pcall(cjson.decode, item)
      if not ok or type(msg) ~= 'table' then
        reason = 'not_json'
      else
        local props = msg['properties']
        local info = type(props) == 'table' and props['delivery_info']
        tag = type(props) == 'table' and props['delivery_tag']
        if type(tag) ~= 'string' or tag == '' or type(info) ~= 'table' then
          reason = 'malformed'
        else
          local ex, rk = info['exchange'], info['routing_key']
          if type(ex) ~= 'string' then ex = '' end
          if type(rk) ~= 'string' then rk = queue end
          stored = '[' .. item .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']'
        end
      end
    end
    if reason then
      tag = 'poison-' .. ARGV[2] .. '-' .. clock[1] .. '.' .. clock[2]
      local headers = {[$poison] = reason, [$poison_size] = #item}
      if reason == 'too_large' then
        -- kombu writes the headers after the body: the tail names the task.
        headers[$poison_tail] = string.sub(item, -4096)
      end
      item = cjson.encode({
        ['body'] = string.sub(item, 1, tonumber(ARGV[4])),
        ['content-type'] = $content_type,
        ['content-encoding'] = 'binary',
        ['headers'] = headers,
        ['properties'] = {
          delivery_tag = tag, priority = 0,
          delivery_info = {exchange = '', routing_key = queue},
        },
      })
      stored = '[' .. item .. ',"",' .. cjson.encode(queue) .. ']'
    end
    redis.call('HSET', KEYS[1], tag, stored)
    redis.call('ZADD', KEYS[2], ARGV[1], tag)
    redis.call('HSET', KEYS[3], tag, ARGV[2] .. ' ' .. ARGV[1])
    return {i, tag, item}
  end
end
for j = 1, n do
  redis.call('DEL', KEYS[4 + nlists + j])
end
return false
""").substitute(
    poison=_lua(keys.POISON_HEADER),
    poison_size=_lua(keys.POISON_SIZE_HEADER),
    poison_tail=_lua(keys.POISON_TAIL_HEADER),
    content_type=_lua(keys.POISON_CONTENT_TYPE),
)

# KEYS: unacked, unacked_index, owner.  ARGV: tag, consumer id.
# Returns 1 when removed, 0 when someone else owns the tag now (or it is gone).
ACK: Final = """#!lua flags=allow-oom
local owner = redis.call('HGET', KEYS[3], ARGV[1])
if owner and string.sub(owner, 1, #ARGV[2] + 1) ~= ARGV[2] .. ' ' then
  return 0
end
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return removed
"""

# KEYS: unacked, unacked_index, owner, then m destination lists, then their m wake lists.
# ARGV: tag, expected owner ('' for an entry written without one), the entry's bytes when it has
#       no owner (else ''), the message to push, 'l' (LPUSH) or 'r' (RPUSH), wake lists' TTL (ms).
# Returns 1 when moved, 0 when the entry changed since it was read (someone else moved it).
MOVE: Final = """#!lua flags=allow-oom
local owner = redis.call('HGET', KEYS[3], ARGV[1]) or ''
if owner ~= ARGV[2] then return 0 end
if owner == '' and redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[3] then return 0 end
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
local m = (#KEYS - 3) / 2
for j = 1, m do
  if ARGV[5] == 'l' then
    redis.call('LPUSH', KEYS[3 + j], ARGV[4])
  else
    redis.call('RPUSH', KEYS[3 + j], ARGV[4])
  end
  redis.call('LPUSH', KEYS[3 + m + j], '')
  redis.call('PEXPIRE', KEYS[3 + m + j], ARGV[6])
end
return 1
"""

# KEYS: consumers, owner, unacked.  ARGV: seconds of silence after which a consumer is dead,
#       then ids to treat as dead at once (channels this process closed on a lost connection).
# Returns {dead ids, {tag, owner, entry, tag, owner, entry, ...}}: the messages to restore.
ORPHANS: Final = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local dead, ids = {}, {}
local limit = now - tonumber(ARGV[1])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', limit)) do
  dead[id] = true
  table.insert(ids, id)
end
for i = 2, #ARGV do
  if not dead[ARGV[i]] then
    dead[ARGV[i]] = true
    table.insert(ids, ARGV[i])
  end
end
if #ids == 0 then return {{}, {}} end
local found = {}
local owners = redis.call('HGETALL', KEYS[2])
for i = 1, #owners, 2 do
  local id = string.match(owners[i + 1], '^(%S+) ')
  if id and dead[id] then
    local entry = redis.call('HGET', KEYS[3], owners[i])
    if entry then
      table.insert(found, owners[i])
      table.insert(found, owners[i + 1])
      table.insert(found, entry)
    end
  end
end
return {ids, found}
"""

# KEYS: consumers.  ARGV: the ids of this process's live consumers.
BEAT: Final = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
for i = 1, #ARGV do
  redis.call('ZADD', KEYS[1], now, ARGV[i])
end
return #ARGV
"""
