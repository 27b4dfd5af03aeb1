"""The shipped Alertmanager config routes each severity to its receivers (checked with amtool,
Debian's prometheus-alertmanager, which `make system-deps` installs): critical pages every
channel, warning goes to e-mail and Slack, info to Slack, and an alert without a severity falls
back to e-mail rather than nowhere."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[3] / "docker" / "monitoring" / "alertmanager.yml"

pytestmark = pytest.mark.skipif(
    shutil.which("amtool") is None, reason="amtool missing: run `make system-deps`"
)


def route(*labels: str, expect: str | None = None) -> subprocess.CompletedProcess[str]:
    """amtool's routing of an alert with ``labels`` (and, with ``expect``, its verdict)."""
    verify = [f"--verify.receivers={expect}"] if expect else []
    return subprocess.run(
        ["amtool", "config", "routes", "test", f"--config.file={CONFIG}", *verify, *labels],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (("severity=critical", "alertname=CeleryWorkerDown"), "critical"),
        (("severity=warning", "alertname=CeleryQueueBacklog"), "warning"),
        (("severity=info",), "slack"),
        (("alertname=SomethingNew",), "email"),
    ],
)
def test_each_severity_reaches_its_receiver(labels: tuple[str, ...], receiver: str) -> None:
    routed = route(*labels)

    assert routed.returncode == 0, routed.stderr
    assert routed.stdout.split() == [receiver]
    assert route(*labels, expect=receiver).returncode == 0


def test_a_wrong_expectation_is_reported_so_the_check_can_fail() -> None:
    assert route("severity=info", expect="email").returncode != 0


def test_the_worker_down_inhibition_needs_a_hostname_on_its_source() -> None:
    # Without one, `equal: [hostname]` holds between two alerts that both lack the label, and a
    # CeleryWorkerDown with no hostname would silence every host-less alert.
    text = CONFIG.read_text()
    (block,) = [b for b in text.split("- source_matchers:") if "CeleryWorkerDown" in b[:80]]
    assert 'hostname=~\\".+\\"' in block or 'hostname=~".+"' in block
