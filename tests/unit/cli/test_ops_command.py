"""The ops commands' click classes: one-line errors with Celery's exit codes."""

from __future__ import annotations

from types import SimpleNamespace

import click
import redis
from click.testing import CliRunner, Result
from redis.backoff import NoBackoff
from redis.retry import Retry

from personal_assistant.workers.cli.ops_command import OpsCommand, OpsGroup, reason
from tests.support.redis_server import free_port

URL = "redis://:hunter2@127.0.0.1:{port}/0"


def closed_port_client() -> tuple[redis.Redis, str]:
    """A client of a port nothing listens on (one try, no retries) and its URL."""
    port = free_port()
    return redis.Redis(port=port, retry=Retry(NoBackoff(), 0)), URL.format(port=port)


def invoke(command: click.Command, url: str, *args: str) -> Result:
    """``command ARGS`` on an app whose broker is ``url``."""
    conf = SimpleNamespace(broker_url=url, result_backend=url)
    return CliRunner().invoke(
        command, list(args), obj=SimpleNamespace(app=SimpleNamespace(conf=conf))
    )


def test_reason_drops_the_host_and_port_the_drivers_repeat_and_masks_passwords() -> None:
    refused = redis.ConnectionError("Error 111 connecting to 127.0.0.1:6380. Connection refused.")
    libpq = OSError(
        'connection failed: connection to server at "db", port 5432 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?"
    )
    socket = redis.ConnectionError("Error 2 connecting to unix socket: /run/r.sock. No such file.")

    assert reason(refused) == "Connection refused"
    assert reason(libpq) == "Connection refused"
    assert reason(socket) == "Error 2 connecting to unix socket: /run/r.sock. No such file"
    assert reason(ValueError("bad redis://:pw@host/0")) == "bad redis://:****@host/0"
    assert reason(redis.TimeoutError()) == "TimeoutError"


@click.group(cls=OpsGroup)
def ops() -> None:
    """A group as the ops commands declare theirs."""


@ops.command()
@click.option("--count", type=click.IntRange(1, 3), default=1)
@click.option("--check", is_flag=True)
def ping(count: int, check: bool) -> None:
    """Ping a Redis nobody runs, or refuse --check as the command's own usage error."""
    if check:
        raise click.UsageError("--check needs a running Redis")
    client, _ = closed_port_client()
    for _ in range(count):
        client.ping()


@ops.command()
def fail() -> None:
    """A Redis error that is not a connection error."""
    raise redis.ResponseError("READONLY You can't write against a read only replica.")


def test_redis_not_answering_inside_a_command_is_one_masked_line_and_exit_69() -> None:
    result = invoke(ops, URL.format(port=6399), "ping")

    assert result.exit_code == 69
    assert result.output == (
        "Error: cannot reach Redis at redis://:****@127.0.0.1:6399/0: Connection refused\n"
    )


def test_another_redis_error_is_one_line_and_exit_1() -> None:
    result = invoke(ops, URL.format(port=6399), "fail")

    assert result.exit_code == 1
    assert result.output == (
        "Error: Redis at redis://:****@127.0.0.1:6399/0: READONLY You can't write against a "
        "read only replica\n"
    )


def test_clicks_usage_errors_are_one_line_and_exit_2_naming_the_help() -> None:
    for args, says in (
        (["ping", "--count", "9"], "Invalid value for '--count': 9 is not in the range 1<=x<=3"),
        (["ping", "--bogus"], "No such option '--bogus'"),
        (["pong"], "No such command 'pong'"),
    ):
        result = invoke(ops, "redis://127.0.0.1:6399/0", *args)

        assert result.exit_code == 2, (args, result.output)
        [line] = result.output.splitlines()
        assert line.startswith(f"Error: {says}"), line
        assert line.endswith("--help')"), line


def test_a_usage_error_the_command_raises_itself_is_one_line_and_exit_64() -> None:
    result = invoke(ops, "redis://127.0.0.1:6399/0", "ping", "--check")

    assert result.exit_code == 64
    assert result.output == "Error: --check needs a running Redis\n"


def test_a_single_ops_command_has_the_same_rules() -> None:
    client, _ = closed_port_client()
    command = OpsCommand("alone", callback=client.ping)

    refused = invoke(command, URL.format(port=6399))
    bad = invoke(command, URL.format(port=6399), "--nope")

    assert refused.exit_code == 69
    assert refused.output.startswith("Error: cannot reach Redis at redis://:****@")
    assert bad.exit_code == 2
    assert len(bad.output.splitlines()) == 1
