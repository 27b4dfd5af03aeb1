"""One place where Celery's signals meet the components (metrics, alerting, workflows, logging).

Like dramatiq's middleware: a component subclasses :class:`WorkerHook` and overrides the few
methods it needs; :class:`HookRegistry` connects each Celery signal once, and only when some
registered hook overrides the matching method, so a disabled component costs nothing on the hot
path. A hook that raises is logged and skipped: it never breaks the task or the other hooks.

Hooks receive each signal in registration order. A hook that relies on what another sets up at
the same signal (alerting listens to the recorder the metrics hook creates at worker init)
declares it in :attr:`WorkerHook.requires`, and :meth:`HookRegistry.add` refuses it until the
hook it names is registered: the order is declared and checked, not implied.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, TypeVar

from celery import signals

logger = logging.getLogger(__name__)

# Celery's signals are process-wide, and the publish signals do not say which app published.
# WorkerApp.send_task and the workflow outbox mark each publish with its app, and a registry
# made for an app passes publish signals only to its own hooks (several apps live in one test
# process; each would stamp and count every other's messages).
_PUBLISH_METHODS = frozenset({"before_task_publish", "after_task_publish"})
# Hook methods for the project's own events, which no Celery signal carries: components call
# them through HookRegistry.emit.
_DIRECT_METHODS = ("on_message_rejected",)
# Apps are compared by identity only: the registry needs no more of them (and so does not
# depend on the app module, which builds registries).
_publishing_app: ContextVar[object] = ContextVar("pa_publishing_app", default=None)


class HookOrderError(ValueError):
    """A hook was registered before a hook it requires (see :attr:`WorkerHook.requires`)."""


@contextmanager
def publishing(app: object) -> Iterator[None]:
    """Mark what runs inside as ``app``'s publish, for the publish signals' hooks."""
    token = _publishing_app.set(app)
    try:
        yield
    finally:
        _publishing_app.reset(token)


class WorkerHook:
    """Base class of typed no-op hooks; override the ones a component needs."""

    #: Shown in logs when the hook fails, and what other hooks' ``requires`` name.
    name: ClassVar[str] = "hook"
    #: Names of the hooks that must be registered before this one: it uses what they set up
    #: at the same signals, and hooks receive each signal in registration order.
    requires: ClassVar[tuple[str, ...]] = ()

    def before_task_publish(
        self,
        *,
        task_name: str,
        headers: dict[str, Any],
        properties: dict[str, Any],
        routing_key: str,
    ) -> None:
        """A producer is about to publish a task message (runs in the producer's process)."""

    def after_task_publish(
        self, *, task_name: str, headers: dict[str, Any], routing_key: str
    ) -> None:
        """A task message was handed to the broker."""

    def on_task_prerun(self, *, task: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """A worker child is about to run a task."""

    def on_task_postrun(
        self,
        *,
        task: Any,
        task_id: str,
        state: str | None,
        retval: Any,
    ) -> None:
        """A task body returned or raised; ``state`` is Celery's (SUCCESS, FAILURE, RETRY...)."""

    def on_task_retry(self, *, request: Any, reason: Any) -> None:
        """A task asked to be retried (it is not finished)."""

    def on_task_failure(
        self,
        *,
        task: Any,
        task_id: str,
        exception: BaseException,
        traceback: Any,
    ) -> None:
        """A task failed for good (no retry left)."""

    def on_task_success(self, *, task: Any, result: Any) -> None:
        """A task succeeded."""

    def on_task_revoked(
        self, *, request: Any, terminated: bool, signum: Any, expired: bool
    ) -> None:
        """A task was revoked before or while running."""

    def on_task_rejected(self, *, message: Any, exc: Any) -> None:
        """A message was rejected (unknown task, bad content)."""

    def on_message_rejected(
        self, *, reason: str, task_name: str, queue: str, task_id: str | None
    ) -> None:
        """The worker rejected a message it cannot run (broker/intake.py), dead-lettering it;
        ``reason`` is one of broker/poison.py's REASONS."""

    def on_worker_init(self, *, sender: Any) -> None:
        """The worker's main process is starting (before the pool)."""

    def on_worker_setup(self, *, instance: Any) -> None:
        """The worker applied its command line (``-Q`` and the rest) and is about to start
        (Celery's ``celeryd_after_setup``; ``instance`` is the worker)."""

    def on_worker_ready(self, *, sender: Any) -> None:
        """The worker consumes messages."""

    def on_worker_process_init(self) -> None:
        """A pool child process started."""

    def on_worker_process_shutdown(self) -> None:
        """A pool child process is exiting (recycled or stopped; not when killed)."""

    def on_worker_shutdown(self, *, sender: Any) -> None:
        """The worker's main process is shutting down."""

    def on_beat_init(self, *, sender: Any) -> None:
        """A beat service is starting."""

    def on_after_setup_logger(self, *, logger: logging.Logger) -> None:
        """Celery configured its main logger."""

    def on_after_setup_task_logger(self, *, logger: logging.Logger) -> None:
        """Celery configured its task logger."""


def _signal_adapters() -> dict[str, tuple[Any, Callable[[WorkerHook, dict[str, Any]], None]]]:
    """Map each hook method to its Celery signal and the translation of the signal's kwargs."""
    return {
        "before_task_publish": (
            signals.before_task_publish,
            lambda h, kw: h.before_task_publish(
                task_name=kw.get("sender") or "",
                headers=kw.get("headers") or {},
                properties=kw.get("properties") or {},
                routing_key=kw.get("routing_key") or "",
            ),
        ),
        "after_task_publish": (
            signals.after_task_publish,
            lambda h, kw: h.after_task_publish(
                task_name=kw.get("sender") or "",
                headers=kw.get("headers") or {},
                routing_key=kw.get("routing_key") or "",
            ),
        ),
        "on_task_prerun": (
            signals.task_prerun,
            lambda h, kw: h.on_task_prerun(
                task=kw.get("task"),
                task_id=kw.get("task_id") or "",
                args=kw.get("args"),
                kwargs=kw.get("kwargs"),
            ),
        ),
        "on_task_postrun": (
            signals.task_postrun,
            lambda h, kw: h.on_task_postrun(
                task=kw.get("task"),
                task_id=kw.get("task_id") or "",
                state=kw.get("state"),
                retval=kw.get("retval"),
            ),
        ),
        "on_task_retry": (
            signals.task_retry,
            lambda h, kw: h.on_task_retry(request=kw.get("request"), reason=kw.get("reason")),
        ),
        "on_task_failure": (
            signals.task_failure,
            lambda h, kw: h.on_task_failure(
                task=kw.get("sender"),
                task_id=kw.get("task_id") or "",
                exception=kw.get("exception") or Exception("unknown"),
                traceback=kw.get("traceback"),
            ),
        ),
        "on_task_success": (
            signals.task_success,
            lambda h, kw: h.on_task_success(task=kw.get("sender"), result=kw.get("result")),
        ),
        "on_task_revoked": (
            signals.task_revoked,
            lambda h, kw: h.on_task_revoked(
                request=kw.get("request"),
                terminated=bool(kw.get("terminated")),
                signum=kw.get("signum"),
                expired=bool(kw.get("expired")),
            ),
        ),
        "on_task_rejected": (
            signals.task_rejected,
            lambda h, kw: h.on_task_rejected(message=kw.get("message"), exc=kw.get("exc")),
        ),
        "on_worker_init": (
            signals.worker_init,
            lambda h, kw: h.on_worker_init(sender=kw.get("sender")),
        ),
        "on_worker_setup": (
            signals.celeryd_after_setup,
            lambda h, kw: h.on_worker_setup(instance=kw.get("instance")),
        ),
        "on_worker_ready": (
            signals.worker_ready,
            lambda h, kw: h.on_worker_ready(sender=kw.get("sender")),
        ),
        "on_worker_process_init": (
            signals.worker_process_init,
            lambda h, kw: h.on_worker_process_init(),
        ),
        "on_worker_process_shutdown": (
            signals.worker_process_shutdown,
            lambda h, kw: h.on_worker_process_shutdown(),
        ),
        "on_worker_shutdown": (
            signals.worker_shutdown,
            lambda h, kw: h.on_worker_shutdown(sender=kw.get("sender")),
        ),
        "on_beat_init": (signals.beat_init, lambda h, kw: h.on_beat_init(sender=kw.get("sender"))),
        "on_after_setup_logger": (
            signals.after_setup_logger,
            lambda h, kw: h.on_after_setup_logger(logger=kw["logger"]),
        ),
        "on_after_setup_task_logger": (
            signals.after_setup_task_logger,
            lambda h, kw: h.on_after_setup_task_logger(logger=kw["logger"]),
        ),
    }


_Hook = TypeVar("_Hook", bound=WorkerHook)


class HookRegistry:
    """Holds the hooks of one app and dispatches Celery's signals to them, failure-isolated."""

    def __init__(self, owner: object = None) -> None:
        #: The app whose publishes (only) this registry's hooks see; None: every publish.
        self.owner = owner
        self._hooks: list[WorkerHook] = []
        self._by_method: dict[str, list[WorkerHook]] = {}
        self._receivers: dict[str, Callable[..., None]] = {}
        self._lock = threading.Lock()
        self._adapters = _signal_adapters()

    @property
    def hooks(self) -> tuple[WorkerHook, ...]:
        """The registered hooks, in registration order."""
        return tuple(self._hooks)

    def add(self, hook: _Hook) -> _Hook:
        """Register ``hook`` and connect the signals it overrides (each signal once).

        Raises HookOrderError, registering nothing, when a hook ``hook.requires`` is missing.
        """
        with self._lock:
            if hook in self._hooks:
                return hook
            registered = {h.name for h in self._hooks}
            missing = [name for name in hook.requires if name not in registered]
            if missing:
                raise HookOrderError(
                    f"hook {hook.name!r} requires {', '.join(map(repr, missing))} to be "
                    "registered before it (it uses what they set up at the same signals)"
                )
            self._hooks.append(hook)
            for method in (*self._adapters, *_DIRECT_METHODS):
                if getattr(type(hook), method) is not getattr(WorkerHook, method):
                    self._by_method.setdefault(method, []).append(hook)
                    if method in self._adapters:
                        self._connect(method)
        return hook

    def emit(self, method: str, **kwargs: Any) -> None:
        """Call ``method`` of every hook that overrides it (a project event; failure-isolated)."""
        for hook in tuple(self._by_method.get(method, ())):
            try:
                getattr(hook, method)(**kwargs)
            except Exception:
                logger.exception("hook %s.%s failed; worker unaffected", hook.name, method)

    def close(self) -> None:
        """Unregister every hook: a closed app's hooks hear no more signals (Celery's signals
        are process-wide, so an app left connected would run its hooks on every other app's
        publish, one more set per app a process ever made)."""
        for hook in list(self._hooks):
            self.remove(hook)

    def remove(self, hook: WorkerHook) -> None:
        """Unregister ``hook``; signals nobody listens to any more are disconnected."""
        with self._lock:
            if hook not in self._hooks:
                return
            self._hooks.remove(hook)
            for method, hooks in list(self._by_method.items()):
                if hook in hooks:
                    hooks.remove(hook)
                if not hooks:
                    del self._by_method[method]
                    if method in self._receivers:
                        signal, _ = self._adapters[method]
                        signal.disconnect(self._receivers.pop(method))

    def connected_signals(self) -> list[str]:
        """Names of the hook methods whose signals are connected now (for tests and ``status``)."""
        return sorted(self._receivers)

    def _connect(self, method: str) -> None:
        if method in self._receivers:
            return
        signal, call = self._adapters[method]
        scoped = self.owner is not None and method in _PUBLISH_METHODS

        def receiver(**kwargs: Any) -> None:
            if scoped and _publishing_app.get() is not self.owner:
                return  # another app's message (or no app's: not ours to stamp or count)
            for hook in tuple(self._by_method.get(method, ())):
                try:
                    call(hook, kwargs)
                except Exception:
                    # A component's bug must not fail a task or starve the other hooks.
                    logger.exception("hook %s.%s failed; task unaffected", hook.name, method)

        self._receivers[method] = receiver
        signal.connect(receiver, weak=False)
