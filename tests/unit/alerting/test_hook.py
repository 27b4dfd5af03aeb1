"""The alerting hook listens to the metrics recorder's task events: it is refused on an app
without the metrics hook it requires."""

from __future__ import annotations

import pytest

from personal_assistant.workers.alerting.hook import AlertingHook
from personal_assistant.workers.hooks.registry import HookOrderError
from tests.support.apps import MakeApp

pytestmark = pytest.mark.usefixtures("clean_env")


def test_alerting_added_without_the_metrics_hook_is_refused(make_app: MakeApp) -> None:
    app = make_app(metrics_enabled=False)

    with pytest.raises(HookOrderError, match="'alerting' requires 'metrics'"):
        app.hooks.add(AlertingHook(app))

    assert AlertingHook not in {type(hook) for hook in app.hooks.hooks}
