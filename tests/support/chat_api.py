"""A loopback HTTP server that answers as an OpenAI-compatible chat-completions API.

``POST /v1/chat/completions`` gets ``choices[0].message.content`` and ``usage`` like OpenAI's
reply. Every request is recorded (path, headers, JSON body). Tests queue special replies for
the next requests: a 429 with Retry-After, a 500, a reply slower than the client's timeout, or
any status and raw body.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Reply:
    """One scripted reply: status, headers and body, sent after ``delay`` seconds."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Request:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: Any
    # time.monotonic() when it arrived.
    at: float

    @property
    def prompt(self) -> str:
        """The content of the last message (the job's prompt)."""
        return str(self.body["messages"][-1]["content"])


def completion_body(answer: str, model: str, prompt_tokens: int, completion_tokens: int) -> bytes:
    """A chat-completion reply as OpenAI sends it."""
    return json.dumps(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    ).encode()


def error_body(message: str, kind: str = "invalid_request_error") -> bytes:
    """An error reply as OpenAI sends it."""
    return json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode()


class ChatAPI:
    """The server; answers ``answer`` with the given token counts unless a reply is queued."""

    def __init__(
        self, answer: str = "The answer.", prompt_tokens: int = 11, completion_tokens: int = 7
    ) -> None:
        self.answer = answer
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.requests: list[Request] = []
        self._queued: deque[Reply] = deque()
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw
                request = Request(self.path, dict(self.headers.items()), body, time.monotonic())
                reply = api._record(request)
                time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply.body)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        """The API's base URL (AI_BASE_URL), ending in /v1."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _record(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if request.path != CHAT_PATH:
                return Reply(404, error_body(f"no route {request.path}", "not_found"))
            if self._queued:
                return self._queued.popleft()
        model = request.body.get("model", "") if isinstance(request.body, dict) else ""
        body = completion_body(self.answer, model, self.prompt_tokens, self.completion_tokens)
        return Reply(200, body)

    def queue(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order (then normally again)."""
        with self._lock:
            self._queued.extend(replies)

    def rate_limit_next(self, retry_after: str | None = "1", count: int = 1) -> None:
        """Answer the next ``count`` requests with 429 and this Retry-After (None: none)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        body = error_body("Rate limit reached for requests", "requests")
        self.queue(*[Reply(429, body, headers) for _ in range(count)])

    def fail_next(self, status: int = 500, count: int = 1, message: str = "server error") -> None:
        """Answer the next ``count`` requests with ``status`` and an OpenAI-style error."""
        self.queue(*[Reply(status, error_body(message, "server_error")) for _ in range(count)])

    def stall_next(self, seconds: float, count: int = 1) -> None:
        """Answer the next ``count`` requests normally, but only after ``seconds``."""
        body = completion_body(self.answer, "slow", self.prompt_tokens, self.completion_tokens)
        self.queue(*[Reply(200, body, delay=seconds) for _ in range(count)])

    def chat_requests(self) -> list[Request]:
        """The requests received on the chat-completions path so far."""
        with self._lock:
            return [r for r in self.requests if r.path == CHAT_PATH]

    def close(self) -> None:
        """Stop serving and free the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
