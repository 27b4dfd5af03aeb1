"""The e-mail outbox: messages checked and built (message.py), sent over SMTP (smtp_sender.py)
and kept in the store from enqueue to sent or failed (outbox.py).

Named ``mail``, not ``email``, so that it never shadows the standard library's ``email``.
The tasks that drive it are in ``tasks/email_tasks.py``; the backend's API, ``enqueue_email``,
is in ``schedulers/email_scheduler.py``.
"""
