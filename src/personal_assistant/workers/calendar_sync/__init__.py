"""Calendar sync: iCalendar feeds into the domain store (``tasks.sync_tasks``).

One feed's sync is three steps, one module each, composed by runner.py:

- fetch.py: a conditional GET (ETag / Last-Modified) with a size cap and a deadline.
- parse.py: the body into :class:`~.parse.FeedEvent` values, one per VEVENT (pure).
- apply.py: the events into the store, keyed by (feed, UID, RECURRENCE-ID): upsert what
  changed, delete what the feed dropped, remember the validators.

errors.py names what can go wrong with a feed (the ``reason`` label of the error metric) and
whether trying again later can help. Nothing here imports Celery, Redis or the app.
"""
