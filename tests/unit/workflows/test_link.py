"""The link every workflow message carries: it survives the message as its own signature type
and hands the task's return value to the app's workflow hook, publishing nothing."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from celery.canvas import Signature

from personal_assistant.workers.workflows.link import AdvanceWorkflow, advance_link


def test_the_link_survives_the_message_and_is_rebuilt_as_its_own_signature_type() -> None:
    travelled = json.loads(json.dumps(advance_link()))
    link = Signature.from_dict(travelled, app=SimpleNamespace())
    assert isinstance(link, AdvanceWorkflow)


def test_the_link_hands_the_return_value_to_the_apps_workflow_hook_and_publishes_nothing() -> None:
    seen: list[Any] = []
    app = SimpleNamespace(workflow_hook=SimpleNamespace(record_success=seen.append))
    link = Signature.from_dict(advance_link(), app=app)
    assert link.apply_async((42,), parent_id="p", root_id="r", priority=None) is None
    assert seen == [42]
