"""A test double of an Ollama server: a real HTTP server on loopback that speaks the
``POST /api/chat`` protocol and answers from a script the test writes.

    server = FakeOllama()
    server.start()
    server.reply(chat_reply({"title": ...}))           # one answer
    server.reply(error_reply('model "x" not found', status=404))
    ...
    server.requests  # the JSON bodies received, in order

Answers are used in order; the last one repeats once the others are used up.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, body (JSON value, or raw bytes) and a delay before it."""

    body: Any
    status: int = 200
    delay: float = 0.0


def chat_reply(
    content: str | dict[str, Any],
    *,
    model: str = "llama3.1:8b",
    prompt_eval_count: int = 30,
    eval_count: int = 50,
    delay: float = 0.0,
) -> Answer:
    """A successful non-streaming ``/api/chat`` answer; a dict ``content`` is sent as JSON."""
    text = content if isinstance(content, str) else json.dumps(content)
    return Answer(
        {
            "model": model,
            "created_at": "2024-07-01T12:00:00.000000Z",
            "message": {"role": "assistant", "content": text},
            "done_reason": "stop",
            "done": True,
            "total_duration": 1_500_000_000,
            "load_duration": 10_000_000,
            "prompt_eval_count": prompt_eval_count,
            "prompt_eval_duration": 100_000_000,
            "eval_count": eval_count,
            "eval_duration": 1_000_000_000,
        },
        delay=delay,
    )


def error_reply(message: str, *, status: int) -> Answer:
    """Ollama's error shape: ``{"error": message}`` with an HTTP status."""
    return Answer({"error": message}, status=status)


class FakeOllama:
    """The server; ``url`` is its base URL once started."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def reply(self, *answers: Answer) -> None:
        """Queue answers for the next requests."""
        with self._lock:
            self._answers.extend(answers)

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with fake._lock:
                    fake.paths.append(self.path)
                    fake.requests.append(json.loads(raw))
                    answer = fake._next_answer()
                if self.path != "/api/chat":
                    answer = Answer(b"404 page not found", status=404)
                if answer.delay and fake._stopping.wait(answer.delay):
                    return
                body = (
                    answer.body
                    if isinstance(answer.body, bytes)
                    else json.dumps(answer.body).encode("utf-8")
                )
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _next_answer(self) -> Answer:
        if not self._answers:
            return error_reply("the test did not script an answer", status=500)
        return self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]


def closed_port_url() -> str:
    """The URL of a loopback port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
