"""A real OpenAI-compatible chat-completions server on loopback, for tests.

A stdlib `ThreadingHTTPServer` on 127.0.0.1 (a free port) serving `POST /v1/chat/completions` with a
real rewriter backend, one request at a time through the model. `Faults` makes it misbehave the way
real servers do (rate limits, overload, slowness, a required API key); it records every request
received and the most requests it had in flight at once.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from instraug_plugin.backends.base import GenerationRequest
from instraug_plugin.core.replies import STOP, Reply

if TYPE_CHECKING:
    from instraug_plugin.backends.transformers_backend import TransformersBackend

ENDPOINT = "/v1/chat/completions"


@dataclass
class Faults:
    """What goes wrong. `statuses` are answered in turn to the first requests (429 with
    `Retry-After: 0`), `delay` holds every answer back, `api_key` must come as the bearer token
    (else 401, echoing the token received, as some servers do)."""

    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    api_key: str | None = None


@dataclass
class Received:
    """One request as the server saw it."""

    body: dict[str, Any]
    authorization: str | None


class OpenAIServer:
    """`with OpenAIServer(backend) as server: ... server.api_base ...`.

    `backend` None serves fault tests that never reach generation (a request that does gets 500).
    `replies` maps each request's `seed` to the reply sent, with the finish reason sent (`Reply`).
    """

    def __init__(self, backend: TransformersBackend | None, faults: Faults | None = None):
        self.backend = backend
        self.faults = faults or Faults()
        self.received: list[Received] = []
        self.replies: dict[int, Reply] = {}
        self.max_in_flight = 0
        self._in_flight = 0
        self._state = threading.Lock()
        self._model = threading.Lock()
        self.closing = threading.Event()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._http.daemon_threads = True
        self._http.handle_error = lambda request, address: None  # clients that timed out hang up
        self._http.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.closing.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

    def answer(self, body: dict[str, Any], authorization: str | None) -> tuple[int, dict[str, str], dict[str, Any]]:
        """(status, extra headers, JSON) for one request, faults first."""
        with self._state:
            self.received.append(Received(body, authorization))
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            status = self.faults.statuses.pop(0) if self.faults.statuses else None
        try:
            if self.faults.api_key is not None and authorization != f"Bearer {self.faults.api_key}":
                token = (authorization or "").removeprefix("Bearer ")
                return 401, {}, _error(f"Incorrect API key provided: {token}", "invalid_api_key")
            if status is not None:
                return status, {"Retry-After": "0"} if status == 429 else {}, _error(f"injected HTTP {status}", "fault")
            if self.faults.delay and self.closing.wait(self.faults.delay):
                return 503, {}, _error("shutting down", "fault")
            if self.backend is None:
                return 500, {}, _error("no model loaded", "server_error")
            return 200, {}, self._complete(body)
        finally:
            with self._state:
                self._in_flight -= 1

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self.backend is not None
        stop = body.get("stop") or []
        seed = int(body.get("seed") or 0)
        request = GenerationRequest(
            messages=tuple((m["role"], m["content"]) for m in body["messages"]),
            temperature=float(body.get("temperature", 1.0)), top_p=float(body.get("top_p", 1.0)),
            max_new_tokens=int(body.get("max_tokens", 64)), sample_index=seed, single_line="\n" in stop,
        )
        with self._model:
            reply = self.backend.generate([request])[0]
            text, finish_reason = str(reply), reply.finish_reason  # `length`: the budget cut it off
            tokenizer = self.backend.tokenizer
            prompt = tokenizer.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
            prompt_tokens, completion_tokens = (len(ids) for ids in tokenizer([prompt, text], add_special_tokens=False)["input_ids"])
        for marker in stop:
            if marker in text:
                text, finish_reason = text.split(marker, 1)[0], STOP
        with self._state:
            self.replies[seed] = Reply(text, finish_reason)
        return {
            "id": f"chatcmpl-{seed}", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{
                "index": 0, "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path != ENDPOINT:
            status, headers, payload = 404, {}, _error(f"no route {self.path}", "not_found")
        else:
            status, headers, payload = self.server.owner.answer(body, self.headers.get("Authorization"))  # type: ignore[attr-defined]
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `OpenAIServer.received` instead."""
