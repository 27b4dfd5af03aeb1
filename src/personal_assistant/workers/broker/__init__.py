"""The Redis broker transport: priorities that run highest first, and a fetch that loses nothing.

- ``priority.py``: "priority 9 runs first" on Redis, as on RabbitMQ.
- ``transport.py``: kombu's Redis transport with the reliable fetch (a message moves from its
  queue list into ``unacked`` in one atomic step), used for ``redis://`` broker URLs.
- ``custody.py`` and ``scripts.py``: who holds which message, consumer heartbeats, and putting
  back the messages of consumers that died.
- ``poison.py`` and ``intake.py``: messages no worker can run are dead-lettered, not dropped.
- ``safety.py``: a Redis that would lose or evict tasks is reported at start-up.
"""
