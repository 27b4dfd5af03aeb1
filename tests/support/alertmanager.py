"""A real Prometheus Alertmanager (Debian's ``prometheus-alertmanager``) on a free loopback port.

:class:`AlertmanagerProcess` writes a minimal configuration (every alert its own group, sent at
once to one webhook receiver, resolves included), starts the binary with no clustering, waits
until ``/-/ready`` answers, and offers the v2 API calls the tests make (list alerts, create a
silence). With ``basic_auth`` it also writes a web configuration that makes Alertmanager require
that user and password on every request (bcrypt hash, as Alertmanager's web config wants).
:func:`notified_alerts` flattens what Alertmanager POSTed to a webhook receiver
(``tests.support.alert_servers.Receiver``).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.alert_servers import Receiver
from tests.support.redis_server import free_port

#: Where Debian's package puts the binary (``make system-deps`` installs it).
ALERTMANAGER_BINARY = "/usr/bin/prometheus-alertmanager"
#: How often a group with news is notified again: short, so a resolve reaches the receiver fast.
GROUP_INTERVAL_S = 1.0


def alertmanager_binary() -> str | None:
    """The Alertmanager binary: Debian's path, else ``prometheus-alertmanager`` on PATH."""
    if Path(ALERTMANAGER_BINARY).is_file():
        return ALERTMANAGER_BINARY
    return shutil.which("prometheus-alertmanager")


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash of ``password`` (cost 4, the lowest: tests need no slow hashing).

    The standard library's ``crypt`` (deprecated, present up to Python 3.12) calls glibc's
    libxcrypt, which makes bcrypt hashes; no extra package needed.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # noqa: PLC0415 - imported here, where its deprecation warning is muted

        # bcrypt is what Alertmanager's web config reads; the weak cost is for a test user.
        salt = crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)  # noqa: S324
        return crypt.crypt(password, salt)


def _config(webhook_url: str) -> str:
    """Alertmanager's configuration: one route to the webhook, every alert its own group."""
    config = {
        "route": {
            "receiver": "sink",
            "group_by": ["..."],
            "group_wait": "0s",
            "group_interval": f"{GROUP_INTERVAL_S:g}s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "sink", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
        ],
    }
    return json.dumps(config, indent=2)  # JSON is YAML


class AlertmanagerProcess:
    """One Alertmanager process owned by a test; :meth:`stop` ends it by its PID."""

    def __init__(
        self,
        workdir: Path,
        webhook: Receiver,
        *,
        basic_auth: tuple[str, str] | None = None,
    ) -> None:
        binary = alertmanager_binary()
        if binary is None:
            raise RuntimeError(f"{ALERTMANAGER_BINARY} is not installed")
        self.binary = binary
        self.workdir = workdir
        self.webhook_url = webhook.url + "/alertmanager"
        self.basic_auth = basic_auth
        self.port = free_port()
        self.log = workdir / "alertmanager.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The base URL (what ALERT_ALERTMANAGER_URL holds)."""
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "alertmanager.yml"
        config.write_text(_config(self.webhook_url))
        command = [
            self.binary,
            f"--config.file={config}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # no gossip: a single instance
            "--log.level=warn",
        ]
        if self.basic_auth is not None:
            user, password = self.basic_auth
            web = self.workdir / "web.yml"
            web.write_text(json.dumps({"basic_auth_users": {user: bcrypt_hash(password)}}))
            command.append(f"--web.config.file={web}")
        return command

    def start(self, timeout: float = 20.0) -> AlertmanagerProcess:
        """Start the process and wait until ``/-/ready`` answers 200."""
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                self.request("GET", "/-/ready", timeout=1.0)
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Alertmanager did not get ready:\n{self.log.read_text()[-2000:]}")

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 5.0) -> Any:
        """Call the HTTP API (with the basic-auth user when there is one); the JSON answer."""
        headers = {"Content-Type": "application/json"}
        if self.basic_auth is not None:
            pair = ":".join(self.basic_auth).encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """The alerts GET /api/v2/alerts lists (active, silenced and inhibited; never
        resolved ones) whose labels include ``labels``."""
        query = urllib.parse.urlencode(
            [("filter", f'{name}="{value}"') for name, value in labels.items()]
        )
        found = self.request("GET", "/api/v2/alerts" + (f"?{query}" if query else ""))
        return list(found)

    def silence(self, comment: str = "test", **labels: str) -> str:
        """Create a one-hour silence matching ``labels`` exactly; its id."""
        now = datetime.now(UTC)
        body = {
            "matchers": [
                {"name": name, "value": value, "isRegex": False, "isEqual": True}
                for name, value in labels.items()
            ],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "tests",
            "comment": comment,
        }
        return str(self.request("POST", "/api/v2/silences", body)["silenceID"])

    def stop(self) -> None:
        """SIGTERM the process (by its PID, through Popen); SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def notified_alerts(receiver: Receiver) -> list[dict[str, Any]]:
    """Every alert in every notification Alertmanager POSTed to ``receiver``, in order, each
    with the notification's ``status`` (firing or resolved) as ``group_status``."""
    with receiver.arrived:
        hits = list(receiver.hits)
    alerts: list[dict[str, Any]] = []
    for hit in hits:
        payload = json.loads(hit.body)
        alerts += [{**alert, "group_status": payload["status"]} for alert in payload["alerts"]]
    return alerts
