"""The link callback every workflow message carries, so a success advances the workflow early.

Celery calls a message's link callbacks right after the task body returns and before the result
backend stores the result: the very point where its own ``chain`` publishes the next step.
:class:`AdvanceWorkflow` is a signature type Celery rebuilds from the message (by its
``subtask_type``); its :meth:`~AdvanceWorkflow.apply_async` publishes nothing and hands the
return value to the app's workflow hook (``app.workflow_hook``, hook.py), which records the
success and publishes the dependents. Recording at ``task_postrun`` instead would put the result
store (two round trips) and every success handler on each hop's path.

Workers must run a version that knows this type before they consume workflow messages that
carry it (Celery refuses a link of an unknown type).
"""

from __future__ import annotations

from typing import Any, Protocol

from celery import Celery
from celery.canvas import Signature

from personal_assistant.workers import keys

ADVANCE_SIGNATURE_TYPE = keys.WORKFLOW_ADVANCE_SIGNATURE_TYPE
# The link's "task" is never published; only its signature type matters.
ADVANCE_TASK_NAME = "personal_assistant.workers.workflow.advance"


class SuccessRecorder(Protocol):
    """What the link needs from the app's workflow hook."""

    def record_success(self, retval: Any) -> None:
        """Record the success of the workflow task running now; never raises."""


@Signature.register_type(name=ADVANCE_SIGNATURE_TYPE)
class AdvanceWorkflow(Signature):  # type: ignore[misc]
    """Link callback of every workflow message: records its task's success, publishes nothing."""

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: Celery | None = None) -> AdvanceWorkflow:
        """Rebuild the link from the message (Celery looks the class up by ``subtask_type``)."""
        return cls(d, app=app)

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        """Record the success of the task running now (``args[0]`` is its return value)."""
        # The app that rebuilt the link: a WorkerApp in this project's workers; any other app
        # (or none) has no workflow hook, and the link then does nothing.
        recorder: SuccessRecorder | None = getattr(self._app, "workflow_hook", None)
        if recorder is not None:
            recorder.record_success(args[0] if args else None)


def advance_link() -> dict[str, Any]:
    """The link to put on a workflow message, as the plain dict it travels as."""
    link = AdvanceWorkflow(ADVANCE_TASK_NAME, subtask_type=ADVANCE_SIGNATURE_TYPE, immutable=True)
    return dict(link)
