"""``make stack``: the production compose topology (docker/docker-compose.prod.yml) as local
processes, with the same commands, the same worker-configs and the same environment.

Started, in order: a private Redis (AOF, noeviction, a password, on a free port or REDIS_PORT),
the ``db-migrate`` command once, one worker per queue service (``--replicas N`` or ``--scale
email_worker=3``, 0 allowed; each replica ``-n <service>-<i>@%h`` with a METRICS_PORT of its
own), the ``scheduler`` (beat, with a BEAT_METRICS_PORT of its own) and a real Prometheus
(Debian's ``prometheus``) on docker/monitoring/prometheus.yml adapted ONLY in its targets:

- each ``dns_sd_configs`` becomes ``static_configs`` listing that service's local replicas
  (job name, relabelling and labels unchanged); the ``prometheus`` job scrapes this Prometheus;
- targets of services not run here (alertmanager) are left out: empty target lists;
- ``rule_files`` are made absolute (docker/monitoring/alert_rules.yml, or ``--rules``);
- with ``--prometheus-interval`` (for tests: a 1 s interval turns a minute of waiting into
  seconds) the global scrape and evaluation intervals too; without it they stay as shipped.

Environment of every process: the service's ``env_file`` then its ``environment``, with
``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` taken from the variables (the real
environment over ``--env-file``, default docker/.env, else docker/.env.example). Placeholder
passwords (CHANGE_ME) are replaced by a random one per stack. Container hostnames are replaced:
``redis`` by 127.0.0.1 and the private Redis's port; ``postgres`` by SQLite under the stack's data
directory unless DATABASE_URL is given; the Alertmanager URL is unset (none runs here). DATA_DIR
is the stack's data directory, and /metrics listen on 127.0.0.1. ``--app`` replaces the Celery
app after ``-A`` (tests run ``tests.support.celery_test_app``: the same app plus test tasks).

Ctrl-C or SIGTERM stops everything (each process's group, by PID): Prometheus, beat, workers
(warm shutdown), Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from personal_assistant.workers.cli.run_local import PrivateRedis, broker_answers

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/ holds scripts, not a package
from stack_config import (
    BEAT_SERVICE,
    MIGRATE_SERVICE,
    ROOT,
    adapt_prometheus_config,
    load_compose,
    local_command,
    service_environment,
    stack_variables,
    worker_services,
)

PROMETHEUS_BINARY = "prometheus"
STOP_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (local)
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class StackProcess:
    """One process of the stack: its service, replica index, node name and metrics port."""

    service: str
    index: int
    name: str
    port: int
    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        """Where Prometheus scrapes it."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it in a session of its own (Ctrl-C reaches only the supervisor)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(  # noqa: S603 (argv built here, no shell)
            self.args,
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        """True while the main process runs."""
        return self.popen is not None and self.popen.poll() is None

    def kill_hard(self) -> None:
        """SIGKILL its whole process group (main process and pool children)."""
        if self.popen is not None:
            _signal_group(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM the main process (a warm shutdown for Celery), without waiting."""
        if self.alive() and self.popen is not None:
            self.popen.terminate()

    def wait_stopped(self, timeout: float) -> None:
        """Wait for the exit, then SIGKILL what is left of its group."""
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
            _signal_group(self.popen.pid, signal.SIGKILL)  # pool children left behind
            self.popen.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


class Stack:
    """The compose topology as local processes (see the module's docstring); ``start()`` then
    ``stop()`` (also after a failed start). ``processes`` maps each service to its replicas."""

    def __init__(
        self,
        root: Path = ROOT,
        *,
        data_dir: Path,
        replicas: int = 1,
        scale: Mapping[str, int] | None = None,
        prometheus_interval: str | None = None,
        rule_files: Sequence[Path] | None = None,
        app: str | None = None,
        variables: Mapping[str, str] | None = None,
        env_file: Path | None = None,
        redis_port: int | None = None,
        prometheus_port: int | None = None,
        database_url: str | None = None,
    ) -> None:
        self.root = root
        self.compose_dir = root / "docker"
        self.compose = load_compose(self.compose_dir / "docker-compose.prod.yml")
        self.data_dir = data_dir.resolve()
        self.replicas = dict.fromkeys(worker_services(self.compose), replicas)
        unknown = set(scale or {}) - set(self.replicas)
        if unknown:
            raise ValueError(f"not a worker service: {', '.join(sorted(unknown))}")
        self.replicas.update(scale or {})
        self.prometheus_interval = prometheus_interval
        self.rule_files = rule_files
        self.app = app
        self.variables = stack_variables(env_file, {**os.environ, **(variables or {})})
        self.redis_port = redis_port or free_port()
        self.prometheus_port = prometheus_port or free_port()
        self.database_url = database_url or f"sqlite:///{self.data_dir / 'assistant.db'}"
        password = self.variables["PROD_REDIS_PASSWORD"]
        self.redis_url = f"redis://:{password}@127.0.0.1:{self.redis_port}/0"
        self.prometheus_url = f"http://127.0.0.1:{self.prometheus_port}"
        self.redis: PrivateRedis | None = None
        self.processes: dict[str, list[StackProcess]] = {}
        self.prometheus: StackProcess | None = None

    def environment(self, service: str, port: int) -> dict[str, str]:
        """The process environment of one replica of ``service`` (metrics on ``port``)."""
        services: Mapping[str, Any] = self.compose["services"]
        own = service_environment(
            services[service],
            self.variables,
            compose_dir=self.compose_dir,
            redis_port=self.redis_port,
            database_url=self.database_url,
            data_dir=self.data_dir,
        )
        # The container has only what compose gives; here the shell's copies of the names
        # compose sets are dropped, so a stray CELERY_BROKER_URL cannot leak in.
        named = {name for s in services.values() for name in (s.get("environment") or {})}
        env = {k: v for k, v in os.environ.items() if k not in named}
        env.update(own)
        env["METRICS_PORT"] = str(port)
        if "BEAT_METRICS_PORT" in own:
            env["BEAT_METRICS_PORT"] = str(port)
        paths = [str(self.root / "src"), str(self.root), os.environ.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _process(self, service: str, index: int, name_args: bool) -> StackProcess:
        port = free_port()
        name = f"{service}-{index}"
        args = local_command(self.compose["services"][service]["command"], self.app)
        if name_args:
            args += ["-n", f"{name}@%h"]
        log = self.data_dir / "logs" / f"{name}.log"
        return StackProcess(service, index, name, port, args, self.environment(service, port), log)

    def start(self) -> Stack:
        """Start everything and wait until it answers; on failure stop what started."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.redis = PrivateRedis(self.redis_url, self.data_dir)
        self.redis.start()
        migrate = self._process(MIGRATE_SERVICE, 1, name_args=False)
        result = subprocess.run(  # noqa: S603 (argv built here)
            migrate.args,
            env=migrate.env,
            cwd=self.root,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"db-migrate failed: {result.stdout.decode()[-2000:]}")
        for service, count in self.replicas.items():
            self.processes[service] = [self._process(service, i, True) for i in range(1, count + 1)]
        self.processes[BEAT_SERVICE] = [self._process(BEAT_SERVICE, 1, name_args=False)]
        for replicas in self.processes.values():
            for process in replicas:
                process.start()
        self.prometheus = self._prometheus_process()
        self.prometheus.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = [p for replicas in self.processes.values() for p in replicas]
        waiting.append(self.prometheus)
        while waiting:
            for process in list(waiting):
                if not process.alive():
                    tail = process.log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{process.name} exited early:\n{tail}")
                if self._ready(process):
                    waiting.remove(process)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"not ready in {READY_TIMEOUT_S:g}s: {[p.name for p in waiting]}"
                )
            time.sleep(0.2)

    def _ready(self, process: StackProcess) -> bool:
        if process is self.prometheus:
            return http_ok(f"{self.prometheus_url}/-/ready")
        if process.service != BEAT_SERVICE and " ready." not in process.log_path.read_text(
            errors="replace"
        ):
            return False
        return http_ok(f"http://{process.target}/metrics")

    def prometheus_config(self) -> dict[str, Any]:
        """The shipped prometheus.yml with this stack's targets (see the module docstring)."""
        monitoring = self.compose_dir / "monitoring"
        shipped = yaml.safe_load((monitoring / "prometheus.yml").read_text())
        targets = {s: [p.target for p in replicas] for s, replicas in self.processes.items()}
        return adapt_prometheus_config(
            shipped,
            targets,
            prometheus_address=f"127.0.0.1:{self.prometheus_port}",
            rules_dir=monitoring,
            rule_files=self.rule_files,
            interval=self.prometheus_interval,
        )

    def _prometheus_process(self) -> StackProcess:
        directory = self.data_dir / "prometheus"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.prometheus_config(), sort_keys=False))
        args = [
            PROMETHEUS_BINARY,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
        ]
        log = self.data_dir / "logs" / "prometheus.log"
        return StackProcess(
            "prometheus", 1, "prometheus", self.prometheus_port, args, dict(os.environ), log
        )

    def stop(self) -> None:
        """Stop Prometheus, beat, the workers (warm shutdown, together), then Redis."""
        if self.prometheus is not None:
            self.prometheus.terminate()
            self.prometheus.wait_stopped(STOP_TIMEOUT_S)
        order = [self.processes.get(BEAT_SERVICE, [])]
        order.append([p for s, ps in self.processes.items() if s != BEAT_SERVICE for p in ps])
        for group in order:
            for process in group:
                process.terminate()
            for process in group:
                process.wait_stopped(STOP_TIMEOUT_S)
        if self.redis is not None:
            self.redis.stop()

    def summary(self) -> list[str]:
        """Where everything listens, one line each."""
        lines = [f"redis       {self.redis_url.split('@')[-1]} (password in the URL below)"]
        for replicas in self.processes.values():
            for process in replicas:
                lines.append(f"{process.name:<22} /metrics on {process.target}")
        lines.append(f"prometheus  {self.prometheus_url}")
        lines.append(f"logs        {self.data_dir / 'logs'}")
        lines.append(f"CELERY_BROKER_URL={self.redis_url}")
        return lines


def _scale(text: str) -> tuple[str, int]:
    service, _, count = text.partition("=")
    if not count.isdigit():
        raise argparse.ArgumentTypeError(f"expected SERVICE=N, got {text!r}")
    return service, int(count)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stack until Ctrl-C or SIGTERM; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--replicas", type=int, default=1, help="replicas of every worker")
    parser.add_argument("--scale", type=_scale, action="append", default=[], help="SERVICE=N")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "stack")
    parser.add_argument("--prometheus-interval", help="scrape/evaluation interval (e.g. 1s)")
    parser.add_argument("--rules", type=Path, nargs="*", help="rule files instead of the shipped")
    parser.add_argument("--app", help="the Celery app instead of the services' (-A)")
    parser.add_argument("--env-file", type=Path, help="compose variables (default docker/.env)")
    parser.add_argument("--prometheus-port", type=int)
    args = parser.parse_args(argv)
    redis_port = int(os.environ["REDIS_PORT"]) if os.environ.get("REDIS_PORT") else None
    stack = Stack(
        data_dir=args.data_dir,
        replicas=args.replicas,
        scale=dict(args.scale),
        prometheus_interval=args.prometheus_interval,
        rule_files=args.rules,
        app=args.app,
        env_file=args.env_file,
        redis_port=redis_port,
        prometheus_port=args.prometheus_port,
        database_url=os.environ.get("DATABASE_URL"),
    )
    stopping: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if broker_answers(stack.redis_url, timeout=0.2):
        print(f"something already answers on port {stack.redis_port}", file=sys.stderr)
        return 1
    try:
        stack.start()
        print("\n".join(stack.summary()), flush=True)
        print("Ctrl-C stops everything.", flush=True)
        reported: set[str] = set()
        while not stopping:
            for process in [p for ps in stack.processes.values() for p in ps]:
                if not process.alive() and process.name not in reported:
                    reported.add(process.name)
                    print(f"{process.name} exited; see {process.log_path}", flush=True)
            time.sleep(0.5)
        return 0
    except (RuntimeError, ValueError) as error:
        print(f"make stack: {error}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
