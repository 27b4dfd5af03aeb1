"""The worker's HTTP server: /metrics, /healthz and /readyz on one port.

One small threaded server per worker *main* process (never per pool child: a per-child server
would export a fraction of the truth). Liveness and readiness are callables supplied by the
caller, so this module knows nothing about Celery or Redis.

It has no authentication, so it listens on METRICS_HOST (loopback unless the deployment says
otherwise), closes a connection that sends nothing for HEALTH_CONNECTION_TIMEOUT_S, serves at
most HEALTH_MAX_CONNECTIONS at a time (one thread each; the rest get a 503 at once), and its
answers carry no exception text (which may name hosts): the log has that. A forked pool child
closes its copy of the listening socket (``close_in_child``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from personal_assistant.workers import constants as c

logger = logging.getLogger(__name__)

# A check answers (ok, reason); the reason is the response body ("ok" when empty).
Check = Callable[[], tuple[bool, str]]


# What a connection past the cap gets, whatever it asked, before it is closed.
_BUSY_BODY = b"too many connections; try again\n"
_BUSY_REPLY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _Server(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` threads at a time."""

    daemon_threads = True  # a hung scrape must not keep the worker from exiting
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        max_connections: int,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._slots = threading.BoundedSemaphore(max_connections)
        # Connections being served, so a forked child can close its copies (close_in_child).
        self._open: set[socket.socket] = set()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread if a slot is free; else a 503 and close, at once."""
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        self._open.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._open.discard(request)
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve, then give the slot back whatever happened."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._open.discard(request)
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        # Never blocks the accepting thread: a reply that does not fit the buffer is dropped.
        with contextlib.suppress(OSError):
            request.setblocking(False)
            # Read what the client already sent, or closing would reset the connection and
            # it might lose the reply.
            with contextlib.suppress(BlockingIOError):
                request.recv(65536)
            request.send(_BUSY_REPLY)
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-reply is not worth a traceback on the worker's stderr."""
        logger.debug("health connection from %s failed", client_address, exc_info=True)

    def close_in_child(self) -> None:
        """In a forked child: close this process's copies of the listening socket and of the
        connections being served, without shutting them down (the parent still serves them)."""
        for sock in (self.socket, *list(self._open)):
            # detach(), not close(): the handlers' files would keep a close() from freeing the
            # descriptor, and their threads do not exist in the child to close them.
            fd = sock.detach()
            if fd >= 0:
                os.close(fd)
        self._open.clear()


def _run_check(check: Check, what: str) -> tuple[bool, str]:
    try:
        ok, reason = check()
    except Exception as exc:  # a broken check is a failed check, not a crashed server
        # The details (which may name hosts) go to the log, not to whoever asked.
        logger.exception("%s check raised", what)
        return False, f"{what} check raised {type(exc).__name__}"
    return bool(ok), str(reason)


def _handler(
    registry: CollectorRegistry, liveness: Check, readiness: Check, timeout_s: float
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pa-workers-health"
        sys_version = ""
        # Every read and write on the connection; a client silent this long is dropped.
        # HTTP/1.0 (the default): one request per connection, so it cannot linger after it.
        timeout = timeout_s

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _check(self, check: Check, what: str) -> None:
            ok, reason = _run_check(check, what)
            text = "ok" if ok and not reason else reason
            self._reply(200 if ok else 503, (text + "\n").encode(), "text/plain; charset=utf-8")

        def do_GET(self) -> None:
            path = urlsplit(self.path).path.rstrip("/") or "/"
            if path == "/metrics":
                try:
                    body = generate_latest(registry)
                except Exception as exc:
                    logger.exception("collecting metrics failed")
                    msg = f"collecting metrics failed: {type(exc).__name__} (see the log)\n"
                    self._reply(500, msg.encode(), "text/plain; charset=utf-8")
                    return
                self._reply(200, body, CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._check(liveness, "liveness")
            elif path == "/readyz":
                self._check(readiness, "readiness")
            else:
                body = b"not found: try /metrics, /healthz or /readyz\n"
                self._reply(404, body, "text/plain; charset=utf-8")

        do_HEAD = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: a scrape every 15 s must not write a line to the worker's log."""

    return Handler


class HealthServer:
    """/metrics, /healthz and /readyz on one port, served from a daemon thread.

    ``host`` is where it listens: loopback by default, since it has no authentication.
    """

    def __init__(
        self,
        port: int,
        *,
        registry: CollectorRegistry,
        liveness: Check,
        readiness: Check,
        host: str = "127.0.0.1",
        max_connections: int = c.HEALTH_MAX_CONNECTIONS,
        connection_timeout: float = c.HEALTH_CONNECTION_TIMEOUT_S,
    ) -> None:
        self.requested_port = port
        self.host = host
        self.registry = registry
        self.liveness = liveness
        self.readiness = readiness
        self.max_connections = max_connections
        self.connection_timeout = connection_timeout
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        """The bound port while running (the real one when started with port 0)."""
        return None if self._server is None else int(self._server.server_address[1])

    @property
    def listening_socket(self) -> socket.socket | None:
        """The listening socket while running."""
        return None if self._server is None else self._server.socket

    def start(self) -> int:
        """Bind and serve; return the bound port. A port in use raises OSError naming it."""
        if self._server is not None:
            return int(self._server.server_address[1])
        handler = _handler(self.registry, self.liveness, self.readiness, self.connection_timeout)
        where = f"{self.host}:{self.requested_port}"
        try:
            server = _Server(
                (self.host, self.requested_port), handler, max_connections=self.max_connections
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(
                    exc.errno,
                    f"cannot serve metrics on {where}: port "
                    f"{self.requested_port} is already in use (set METRICS_PORT to a free port; "
                    "each worker on one host needs its own)",
                ) from exc
            raise OSError(
                exc.errno,
                f"cannot serve metrics on {where} (METRICS_HOST, METRICS_PORT): "
                f"{exc.strerror or exc}",
            ) from exc
        # Python creates sockets close-on-exec; a fork (the prefork pool) still copies it:
        # the pool's children call close_in_child.
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"pa-health-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return int(server.server_address[1])

    def stop(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(5)

    def close_in_child(self) -> None:
        """In a process forked from the server's (a pool child): drop its copies of the sockets.

        The child must not keep the port bound after the parent exits, nor hold a scrape's
        connection open. It does not serve (the serving thread is not forked), so ``stop``,
        which waits for that thread, would hang: this only closes descriptors.
        """
        server, self._server = self._server, None
        self._thread = None
        if server is not None:
            server.close_in_child()
