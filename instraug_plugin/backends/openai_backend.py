"""OpenAI-compatible HTTP rewriter: any server with `POST {api_base}/chat/completions` (vLLM serve,
llama.cpp server, Ollama, hosted APIs).

Each request of a batch is one HTTP call; `max_concurrency` of them are in flight at a time (a thread
pool over one synchronous `httpx.Client`). Connect errors, timeouts, 408/409/429 and 5xx are retried
with exponential backoff and jitter (a `Retry-After` header in seconds wins); other statuses fail at
once. Every request carries a seed derived from its cache key, so servers that honour `seed` give
reproducible replies. Constrained placeholder mode only with `structured_outputs=True`, for servers
that take vLLM's `structured_outputs` regex (vLLM serve >= 0.12); otherwise use placeholder mode
`mask`. The API key is read from an environment variable and only ever sent in the
`Authorization` header; it is never stored in `model_id` and is scrubbed from error messages.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from instraug_plugin.backends.base import GenerationRequest
from instraug_plugin.core.errors import InstrAugError, one_line, redact
from instraug_plugin.core.replies import STOP, Reply

try:
    import httpx
except ImportError:
    raise InstrAugError("the openai backend needs httpx: pip install 'instraug-plugin[openai]'") from None

RETRY_STATUSES = frozenset({408, 409, 429})
RETRY_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
DETAIL_CHARS = 200
SEED_BITS = 31  # fits every server's seed type (llama.cpp takes a 32-bit unsigned seed)


def request_body(request: GenerationRequest, model: str, model_id: str,
                 structured_outputs: bool = False) -> dict[str, Any]:
    """The chat-completions JSON body for one request (with vLLM's structured-outputs regex if asked)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": role, "content": content} for role, content in request.messages],
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_new_tokens,
        "n": 1,
        "seed": request.sampling_seed(model_id, SEED_BITS),
    }
    if structured_outputs and (constraint := request.constraint):
        body["structured_outputs"] = {"regex": constraint.to_regex()}
    elif request.single_line:
        body["stop"] = ["\n"]
    return body


def _retry_after(response: httpx.Response) -> float | None:
    """The `Retry-After` header in seconds, or None when absent or not a number."""
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def _backoff(attempt: int) -> float:
    """Exponential backoff with jitter: half to all of base * 2^(attempt-1), capped."""
    return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


class _Aborted(Exception):
    """Another request of the batch failed; this one stops retrying."""


class OpenAIBackend:
    """A model served behind an OpenAI-compatible chat-completions endpoint.

    `api_base` is the URL up to and including the version, e.g. `http://127.0.0.1:8000/v1`;
    `model` is the served model name. The key comes from the environment variable `api_key_env`
    and is sent only when that variable is set.
    """

    name = "openai"
    supports_constraints = False

    def __init__(
        self,
        model: str | None = None,
        api_base: str | None = None,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        request_timeout: float = 60.0,
        max_retries: int = 5,
        structured_outputs: bool = False,
    ):
        if not api_base:
            raise InstrAugError("the openai backend needs --api-base, e.g. http://127.0.0.1:8000/v1")
        if not model:
            raise InstrAugError("the openai backend needs --model: the model name the server serves")
        if not api_base.startswith(("http://", "https://")):
            raise InstrAugError(f"--api-base must be an http:// or https:// URL; got {redact(api_base)!r}")
        if max_concurrency < 1 or request_timeout <= 0 or max_retries < 0:
            raise InstrAugError("--max-concurrency must be >= 1, --request-timeout > 0 and --max-retries >= 0")
        self.model = model
        self.model_id = f"openai:{model}"
        self.url = api_base.rstrip("/") + "/chat/completions"
        self.shown_url = redact(self.url)  # the URL as messages show it: credentials replaced by ***
        self.api_key_env = api_key_env
        self.max_retries = max_retries
        self.structured_outputs = self.supports_constraints = structured_outputs
        self._key = os.environ.get(api_key_env) or None
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._client = httpx.Client(
            headers=headers, timeout=request_timeout,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="instraug-openai")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """One `Reply` per request, in order, with the server's `finish_reason` (`length`: cut off by
        `max_tokens`); the first request that fails stops the others."""
        abort = threading.Event()
        futures = [self._pool.submit(self._complete, request, abort) for request in requests]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future in done and (error := future.exception()) is not None:
                abort.set()
                for other in pending:
                    other.cancel()
                raise error
        return [future.result() for future in futures]

    def _complete(self, request: GenerationRequest, abort: threading.Event) -> Reply:
        """POST one request, retrying transient failures; the reply text."""
        body = request_body(request, self.model, self.model_id, self.structured_outputs)
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                response = self._client.post(self.url, json=body)
            except RETRY_ERRORS as exc:
                problem, wait_seconds = self._scrub(one_line(f"{type(exc).__name__}: {exc}").rstrip(":")), None
            else:
                if response.status_code == 200:
                    return self._reply_text(response)
                problem = f"HTTP {response.status_code}{self._detail(response)}"
                if not (response.status_code in RETRY_STATUSES or response.status_code >= 500):
                    raise InstrAugError(f"{self.shown_url} answered {problem}{self._key_hint(response)}; not retried")
                wait_seconds = _retry_after(response)
            if attempt < attempts and abort.wait(_backoff(attempt) if wait_seconds is None else wait_seconds):
                raise _Aborted
        raise InstrAugError(f"{self.shown_url} failed after {attempts} attempt(s), last: {problem}")

    def _reply_text(self, response: httpx.Response) -> Reply:
        try:
            choice = response.json()["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise InstrAugError(f"{self.shown_url} answered 200 without choices[0].message.content") from None
        return Reply(content or "", choice.get("finish_reason") or STOP)

    def _detail(self, response: httpx.Response) -> str:
        """`: <server message>` on one short line (the OpenAI error shape, else the body), or ''."""
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        message = self._scrub(one_line(str(message)))[:DETAIL_CHARS]
        return f": {message}" if message else ""

    def _key_hint(self, response: httpx.Response) -> str:
        if response.status_code not in (401, 403):
            return ""
        return f" (API key from ${self.api_key_env}: {'set' if self._key else 'not set'})"

    def _scrub(self, text: str) -> str:
        """`text` with the API key and URL credentials replaced, in case a server or an error echoes them."""
        return redact(text.replace(self._key, "***") if self._key else text)

    def close(self) -> None:
        """Stop the worker threads and close the connections."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()
