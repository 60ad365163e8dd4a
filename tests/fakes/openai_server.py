"""A scripted LLM server on 127.0.0.1 for tests: OpenAI Chat Completions and Responses, Anthropic
Messages and Gemini generateContent, each streamed (SSE) when the client asks.

Each test queues replies (text, tool calls, an HTTP error status, optionally after a delay);
every request is recorded for assertions. Stdlib only; runs in a daemon thread.

    with FakeLLMServer() as server:
        server.push(Reply.tools(("read_file", {"path": "a.txt"})), Reply.text("done"))
        LLMAgent("openai/fake-model", api_base=server.openai_base, api_key="sk-fake")
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Reply:
    """One scripted answer. Exactly one of text / tool_calls / status is meaningful."""

    text: str | None = None
    tool_calls: list[tuple[str, dict]] = field(default_factory=list)
    status: int | None = None  # an HTTP error status (429, 500...) instead of an answer
    delay: float = 0.0  # seconds to wait before answering (for timeouts)
    input_tokens: int = 11
    output_tokens: int = 7

    @classmethod
    def say(cls, text: str, **kw: Any) -> "Reply":
        return cls(text=text, **kw)

    @classmethod
    def tools(cls, *calls: tuple[str, dict], text: str | None = None, **kw: Any) -> "Reply":
        return cls(text=text, tool_calls=list(calls), **kw)

    @classmethod
    def error(cls, status: int, **kw: Any) -> "Reply":
        return cls(status=status, **kw)

    @classmethod
    def slow(cls, delay: float, text: str = "late") -> "Reply":
        return cls(text=text, delay=delay)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def _words(text: str) -> list[str]:
    """Split text into a few streaming pieces (keeps whitespace)."""
    parts, cur = [], ""
    for ch in text:
        cur += ch
        if ch == " " and len(cur) > 3:
            parts.append(cur)
            cur = ""
    if cur:
        parts.append(cur)
    return parts or [""]


class FakeLLMServer:
    """Threaded HTTP server answering queued replies; `requests` holds what it received."""

    def __init__(self, default: Reply | None = None) -> None:
        self.replies: deque[Reply] = deque()
        self.default = default  # used when the queue is empty; None -> HTTP 500
        self.requests: list[Recorded] = []
        self.route: Callable[[Recorded], Reply | None] | None = None  # optional per-request hook
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> "FakeLLMServer":
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base(self) -> str:
        return self.url + "/v1"

    # -- scripting -------------------------------------------------------------------
    def push(self, *replies: Reply | str) -> None:
        with self._lock:
            for r in replies:
                self.replies.append(Reply(text=r) if isinstance(r, str) else r)

    def completions(self) -> list[Recorded]:
        """Recorded chat-completion / messages requests (not count_tokens etc.)."""
        return [r for r in self.requests if _route(r.path)]

    def _next(self, rec: Recorded) -> Reply:
        if self.route is not None:
            routed = self.route(rec)
            if routed is not None:
                return routed
        with self._lock:
            if self.replies:
                return self.replies.popleft()
        return self.default or Reply(status=500, text="fake server: no scripted reply left")

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)


def _make_handler(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            self._record(None)
            self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"_raw": raw.decode("utf-8", "replace")}
            rec = self._record(body)
            path = self.path.split("?")[0].rstrip("/")
            if path.endswith("/count_tokens"):
                return self._json(200, {"input_tokens": 42})
            api = _route(self.path)
            if api is None:
                return self._json(404, {"error": {"message": f"fake server: no route {path}"}})
            reply = server._next(rec)
            if reply.delay:
                server._sleep(reply.delay)
                if server._stopping.is_set():
                    return
            anthropic = api == "anthropic"
            try:
                if reply.status:
                    return self._error(reply, api)
                stream = bool(body.get("stream"))
                if anthropic:
                    self._anthropic(reply, body, stream)
                elif api == "responses":
                    self._responses(reply, body, stream)
                elif api == "gemini":
                    self._gemini(reply, body, "streamGenerateContent" in path)
                else:
                    self._openai(reply, body, stream)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        # -- helpers ---------------------------------------------------------------
        def _record(self, body: Any) -> Recorded:
            rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with server._lock:
                server.requests.append(rec)
            return rec

        def _json(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, reply: Reply, api: str) -> None:
            msg = reply.text or f"fake server: scripted HTTP {reply.status}"
            extra = {"Retry-After": "0"} if reply.status == 429 else {}
            if api == "gemini":
                status = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED"}.get(
                    reply.status or 500, "INTERNAL")
                payload: dict = {"error": {"code": reply.status, "message": msg, "status": status}}
            elif api == "anthropic":
                kind = "rate_limit_error" if reply.status == 429 else "api_error"
                payload = {"type": "error", "error": {"type": kind, "message": msg}}
            else:
                payload = {"error": {"message": msg, "type": "server_error", "code": reply.status}}
            self._json(reply.status or 500, payload, extra)

        def _sse_start(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

        def _sse(self, data: Any, event: str | None = None) -> None:
            text = data if isinstance(data, str) else json.dumps(data)
            head = f"event: {event}\n" if event else ""
            self.wfile.write(f"{head}data: {text}\n\n".encode())
            self.wfile.flush()

        # -- OpenAI chat completions --------------------------------------------------
        def _openai(self, reply: Reply, body: dict, stream: bool) -> None:
            cid, model, now = f"chatcmpl-{uuid.uuid4().hex[:12]}", body.get("model", "fake-model"), int(time.time())
            calls = [
                {"id": f"call_{uuid.uuid4().hex[:10]}", "type": "function",
                 "function": {"name": n, "arguments": json.dumps(a)}}
                for n, a in reply.tool_calls
            ]
            finish = "tool_calls" if calls else "stop"
            usage = {"prompt_tokens": reply.input_tokens, "completion_tokens": reply.output_tokens,
                     "total_tokens": reply.input_tokens + reply.output_tokens}
            if not stream:
                msg: dict = {"role": "assistant", "content": reply.text}
                if calls:
                    msg["tool_calls"] = calls
                return self._json(200, {
                    "id": cid, "object": "chat.completion", "created": now, "model": model,
                    "choices": [{"index": 0, "message": msg, "finish_reason": finish}], "usage": usage})
            base = {"id": cid, "object": "chat.completion.chunk", "created": now, "model": model}

            def chunk(delta: dict, fin: str | None = None) -> None:
                self._sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": fin}]})

            self._sse_start()
            chunk({"role": "assistant", "content": ""})
            if reply.text:
                for piece in _words(reply.text):
                    chunk({"content": piece})
            for i, c in enumerate(calls):
                args = c["function"]["arguments"]
                half = len(args) // 2
                chunk({"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                       "function": {"name": c["function"]["name"], "arguments": args[:half]}}]})
                chunk({"tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]})
            chunk({}, finish)
            if (body.get("stream_options") or {}).get("include_usage"):
                self._sse({**base, "choices": [], "usage": usage})
            self._sse("[DONE]")

        # -- OpenAI Responses (Codex) -------------------------------------------------
        def _responses(self, reply: Reply, body: dict, stream: bool) -> None:
            rid = f"resp_{uuid.uuid4().hex[:12]}"
            items: list[dict] = []
            if reply.text:
                items.append({"type": "message", "id": f"msg_{uuid.uuid4().hex[:8]}", "role": "assistant",
                              "status": "completed",
                              "content": [{"type": "output_text", "text": reply.text, "annotations": []}]})
            for n, a in reply.tool_calls:
                items.append({"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:8]}", "status": "completed",
                              "call_id": f"call_{uuid.uuid4().hex[:10]}", "name": n, "arguments": json.dumps(a)})
            usage = {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
                     "total_tokens": reply.input_tokens + reply.output_tokens,
                     "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
            response = {"id": rid, "object": "response", "created_at": int(time.time()), "status": "completed",
                        "model": body.get("model", "fake-model"), "output": items, "usage": usage}
            if not stream:
                return self._json(200, response)
            self._sse_start()
            self._sse({"type": "response.created", "response": {**response, "status": "in_progress", "output": []}},
                      "response.created")
            for i, item in enumerate(items):
                self._sse({"type": "response.output_item.added", "output_index": i,
                           "item": {**item, "content": []} if item["type"] == "message" else item},
                          "response.output_item.added")
                if item["type"] == "message":
                    for piece in _words(item["content"][0]["text"]):
                        self._sse({"type": "response.output_text.delta", "item_id": item["id"], "output_index": i,
                                   "content_index": 0, "delta": piece}, "response.output_text.delta")
                self._sse({"type": "response.output_item.done", "output_index": i, "item": item},
                          "response.output_item.done")
            self._sse({"type": "response.completed", "response": response}, "response.completed")

        # -- Gemini generateContent ---------------------------------------------------
        def _gemini(self, reply: Reply, body: dict, stream: bool) -> None:
            parts: list[dict] = [{"text": p} for p in (_words(reply.text) if stream else [reply.text])] \
                if reply.text else []
            calls = [{"functionCall": {"name": n, "args": a}} for n, a in reply.tool_calls]
            usage = {"promptTokenCount": reply.input_tokens, "candidatesTokenCount": reply.output_tokens,
                     "totalTokenCount": reply.input_tokens + reply.output_tokens}

            def doc(ps: list[dict], last: bool) -> dict:
                cand: dict = {"content": {"role": "model", "parts": ps}, "index": 0}
                if last:
                    cand["finishReason"] = "STOP"
                return {"candidates": [cand], "modelVersion": "fake-model", **({"usageMetadata": usage} if last else {})}

            if not stream:
                return self._json(200, doc(parts + calls, True))
            self._sse_start()
            chunks = [[p] for p in parts] + ([calls] if calls else [])
            for i, ps in enumerate(chunks or [[{"text": ""}]]):
                self._sse(doc(ps, i == max(0, len(chunks) - 1)))

        # -- Anthropic Messages -------------------------------------------------------
        def _anthropic(self, reply: Reply, body: dict, stream: bool) -> None:
            mid, model = f"msg_{uuid.uuid4().hex[:12]}", body.get("model", "claude-fake")
            blocks: list[dict] = []
            if reply.text:
                blocks.append({"type": "text", "text": reply.text})
            for n, a in reply.tool_calls:
                blocks.append({"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:10]}", "name": n, "input": a})
            stop = "tool_use" if reply.tool_calls else "end_turn"
            usage = {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens}
            message = {"id": mid, "type": "message", "role": "assistant", "model": model,
                       "content": blocks, "stop_reason": stop, "stop_sequence": None, "usage": usage}
            if not stream:
                return self._json(200, message)
            self._sse_start()
            start = {**message, "content": [], "stop_reason": None,
                     "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1}}
            self._sse({"type": "message_start", "message": start}, "message_start")
            for i, b in enumerate(blocks):
                if b["type"] == "text":
                    self._sse({"type": "content_block_start", "index": i,
                               "content_block": {"type": "text", "text": ""}}, "content_block_start")
                    for piece in _words(b["text"]):
                        self._sse({"type": "content_block_delta", "index": i,
                                   "delta": {"type": "text_delta", "text": piece}}, "content_block_delta")
                else:
                    self._sse({"type": "content_block_start", "index": i,
                               "content_block": {**b, "input": {}}}, "content_block_start")
                    self._sse({"type": "content_block_delta", "index": i,
                               "delta": {"type": "input_json_delta", "partial_json": json.dumps(b["input"])}},
                              "content_block_delta")
                self._sse({"type": "content_block_stop", "index": i}, "content_block_stop")
            self._sse({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                       "usage": {"output_tokens": reply.output_tokens}}, "message_delta")
            self._sse({"type": "message_stop"}, "message_stop")

    return Handler


def _route(path: str) -> str | None:
    """Which API a request path belongs to (None: not a model call)."""
    p = path.split("?")[0].rstrip("/")
    if p.endswith("/chat/completions"):
        return "openai"
    if p.endswith("/responses"):
        return "responses"
    if p.endswith("/messages"):
        return "anthropic"
    if ":generateContent" in p or ":streamGenerateContent" in p:
        return "gemini"
    return None
