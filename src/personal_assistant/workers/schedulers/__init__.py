"""Schedulers: periodic (beat) entries per domain, and task dependencies."""
