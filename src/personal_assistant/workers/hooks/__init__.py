"""The signal bridge: components plug into Celery's signals as typed hooks on ``app.hooks``.

:class:`WorkerHook` is the base of every hook (typed no-op methods, one per signal or project
event), :class:`HookRegistry` connects and dispatches them per app, and :func:`publishing` marks
a publish as one app's. The small hooks that are no subsystem's live here too
(``mask_secrets``, ``default_priority``).
"""

from personal_assistant.workers.hooks.registry import HookRegistry, WorkerHook, publishing

__all__ = ["HookRegistry", "WorkerHook", "publishing"]
