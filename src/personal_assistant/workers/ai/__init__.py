"""Scheduled AI jobs: prompts sent to an OpenAI-compatible chat-completions API on a schedule.

- schedule.py: a job's schedule (a cron expression in a time zone, or an interval) and its
  next run time (pure)
- chat_client.py: one chat-completions call over httpx, its errors typed (no Redis, no Celery)
- rate_limit.py: the cluster-wide request limiter (one Lua script in Redis)
- jobs.py: the jobs in the store: create/update, claim due jobs, record a run's result

The tasks that use them are in ``tasks/ai_tasks.py``; the backend's API in
``schedulers/ai_scheduler.py``.
"""
