"""A stub of the Anthropic Messages API on 127.0.0.1, scripted per test.

The real agent CLIs (claude, opencode) talk to it instead of the internet. Each request is
recorded; the reply is chosen by the first rule whose marker occurs in the request body,
else by the default reply, so agents of one run can be given different fates through a
marker in their prompts.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["RecordedRequest", "Reply", "ReplyKind", "StubModel"]

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class ReplyKind(StrEnum):
    """What the stub does with a request."""

    TEXT = "text"
    STATUS = "status"
    HANG = "hang"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Reply:
    """One scripted answer: assistant text, an HTTP error, a hang, or a broken stream."""

    kind: ReplyKind = ReplyKind.TEXT
    text: str = "stub reply"
    status: int = 200
    input_tokens: int = 21
    output_tokens: int = 8
    cache_read_tokens: int = 5
    cache_creation_tokens: int = 3
    retry_after_s: float | None = None

    @classmethod
    def text_reply(cls, text: str) -> Reply:
        """A normal assistant message holding `text`."""
        return cls(kind=ReplyKind.TEXT, text=text)

    @classmethod
    def error(cls, status: int, retry_after_s: float | None = 0.0) -> Reply:
        """An API error with HTTP `status`; by default it asks for an immediate retry.

        Both CLIs honour `retry-after`, so a zero keeps retry budgets free of wall time
        (OpenCode 1.18 retries five times and offers no setting to lower that).
        """
        return cls(kind=ReplyKind.STATUS, status=status, retry_after_s=retry_after_s)

    @classmethod
    def hang(cls) -> Reply:
        """Accept the request and never answer (until the stub stops)."""
        return cls(kind=ReplyKind.HANG)

    @classmethod
    def malformed(cls, retry_after_s: float | None = 0.0) -> Reply:
        """A 200 event stream that breaks off with invalid JSON (OpenCode retries it)."""
        return cls(kind=ReplyKind.MALFORMED, retry_after_s=retry_after_s)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stub received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: str

    def system_text(self) -> str:
        """The system prompt as one string, whichever form the client sent."""
        return _flatten(self.body.get("system", ""))

    def messages_text(self) -> str:
        """All message contents of the request as one string."""
        return "\n".join(_flatten(m.get("content", "")) for m in self.body.get("messages", []))


def _flatten(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_flatten(part) for part in value)
    if isinstance(value, dict):
        return _flatten(value.get("text", value.get("content", "")))
    return ""


@dataclass
class _Script:
    default: Reply = field(default_factory=Reply)
    rules: list[tuple[str, Reply]] = field(default_factory=list)

    def pick(self, raw_body: str) -> Reply:
        for marker, reply in self.rules:
            if marker in raw_body:
                return reply
        return self.default


class StubModel:
    """A threaded HTTP server speaking enough of the Messages API for claude and opencode."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._script = _Script()
        self._stopping = threading.Event()
        self.requests: list[RecordedRequest] = []
        self._server = ThreadingHTTPServer((host, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base_url(self) -> str:
        """Root URL, as ANTHROPIC_BASE_URL wants it (no /v1)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _serve(self) -> None:
        self._server.serve_forever(poll_interval=0.05)

    def start(self) -> StubModel:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release hung requests and stop serving."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def reply_with(self, reply: Reply) -> None:
        """Answer every request not matched by a rule with `reply`."""
        with self._lock:
            self._script.default = reply

    def when(self, marker: str, reply: Reply) -> None:
        """Answer requests whose body contains `marker` with `reply`."""
        with self._lock:
            self._script.rules.append((marker, reply))

    def message_requests(self) -> list[RecordedRequest]:
        """Recorded POSTs to /v1/messages (not token counting)."""
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0].endswith("/messages")]

    def _record(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self._script.pick(request.raw)


def _handler_for(stub: StubModel) -> type[BaseHTTPRequestHandler]:
    class Handler(_MessagesHandler):
        owner = stub

    return Handler


class _MessagesHandler(BaseHTTPRequestHandler):
    owner: StubModel
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        self._send_json(200, {"data": [], "has_more": False})

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        request = self._read_request()
        route = request.path.split("?")[0]
        if route.endswith("/count_tokens"):
            self._send_json(200, {"input_tokens": max(1, len(request.raw) // 4)})
            return
        if not route.endswith("/messages"):
            self._send_json(200, {})
            return

        reply = self.owner._record(request)
        self._answer(reply, request.body)

    def _read_request(self) -> RecordedRequest:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", errors="replace") if length else ""
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = {}
        headers = {k.lower(): v for k, v in self.headers.items() if "key" not in k.lower()}
        return RecordedRequest("POST", self.path, headers, body, raw)

    def _answer(self, reply: Reply, body: dict[str, Any]) -> None:
        if reply.kind is ReplyKind.STATUS:
            self._send_error(reply)
        elif reply.kind is ReplyKind.HANG:
            self.owner._stopping.wait()
        elif reply.kind is ReplyKind.MALFORMED:
            self._send_malformed(reply)
        elif body.get("stream"):
            self._send_stream(reply, str(body.get("model", "stub-model")))
        else:
            self._send_json(200, _message(reply, str(body.get("model", "stub-model"))))

    def _send_json(
        self,
        status: int,
        payload: dict[str, Any],
        extra: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", f"req_stub_{uuid.uuid4().hex[:12]}")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, reply: Reply) -> None:
        kind = ERROR_TYPES.get(reply.status, "api_error")
        message = f"stub {kind} ({reply.status})"
        payload = {"type": "error", "error": {"type": kind, "message": message}}
        self._send_json(reply.status, payload, _retry_headers(reply))

    def _start_stream(self, extra: dict[str, str] | None = None) -> None:
        self.send_response(200)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("request-id", f"req_stub_{uuid.uuid4().hex[:12]}")
        self.end_headers()
        self.close_connection = True

    def _send_stream(self, reply: Reply, model: str) -> None:
        self._start_stream()
        for name, data in _stream_events(reply, model):
            chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            self.wfile.write(chunk)
            self.wfile.flush()

    def _send_malformed(self, reply: Reply) -> None:
        self._start_stream(_retry_headers(reply))
        self.wfile.write(b'event: message_start\ndata: {"type": "message_start", "mess\n\n')
        self.wfile.write(b"event: content_block_delta\ndata: }}not json{{\n\n")
        self.wfile.flush()
        time.sleep(0.05)


def _retry_headers(reply: Reply) -> dict[str, str]:
    if reply.retry_after_s is None:
        return {}
    seconds = reply.retry_after_s
    return {"retry-after": f"{seconds:g}", "retry-after-ms": f"{seconds * 1000:g}"}


def _usage(reply: Reply, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": reply.input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": reply.cache_read_tokens,
        "cache_creation_input_tokens": reply.cache_creation_tokens,
    }


def _message(reply: Reply, model: str) -> dict[str, Any]:
    return {
        "id": f"msg_stub_{uuid.uuid4().hex[:16]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply.text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": _usage(reply, reply.output_tokens),
    }


def _stream_events(reply: Reply, model: str) -> Iterator[tuple[str, dict[str, Any]]]:
    start = {**_message(reply, model), "content": [], "stop_reason": None}
    start["usage"] = _usage(reply, 1)
    yield "message_start", {"type": "message_start", "message": start}
    block = {"type": "text", "text": ""}
    yield (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": block},
    )
    yield "ping", {"type": "ping"}
    delta = {"type": "text_delta", "text": reply.text}
    yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    stop = {"stop_reason": "end_turn", "stop_sequence": None}
    usage = _usage(reply, reply.output_tokens)
    yield "message_delta", {"type": "message_delta", "delta": stop, "usage": usage}
    yield "message_stop", {"type": "message_stop"}
