"""A locust user of the router's OpenAI HTTP API, beside the gRPC one: chat completions, unary and SSE-streamed,
with TTFT, ITL and TPOT of streams reported as their own rows (the same row kinds as `grpc_user`).

A locustfile of its own, so the gRPC locustfile's default users stay as they are:

    locust -f loadtest/http_user.py --host http://127.0.0.1:8000 --headless -u 8 -r 8 -t 30s

Rows: `HTTP chat`, `HTTP chat_stream`, `HTTP chat_stream ttft`, `... itl`, `... tpot`. `--mimo-http-token` sends
a bearer token; `--mimo-max-new-tokens` bounds each answer.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import requests
from locust import User, constant, events, task

from loadtest.slo import CALL_TYPE, STREAM_TYPE

QUESTIONS = ("What is 47 + 38?", "What is 27 * 6?", "Solve for x: 7x + 12 = 68.", "Compute 91 - 46.")


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    group = parser.add_argument_group("MiMo Serve over HTTP")
    group.add_argument("--mimo-http-token", default="", help="bearer token (the router's --auth-token)")
    group.add_argument("--mimo-max-new-tokens", type=int, default=32)


class HttpStatusError(Exception):
    """A non-200 answer; its text starts with the status and OpenAI's error type (what locust groups errors by)."""

    def __init__(self, status: int, body: str) -> None:
        try:
            error = json.loads(body)["error"]
            detail = f"{error.get('type')}: {error.get('message', '')[:160]}"
        except (ValueError, KeyError, TypeError):
            detail = body[:160]
        super().__init__(f"HTTP {status} {detail}")


class MimoHttpUser(User):
    """Chat completions against `host` (the router's HTTP base URL)."""

    host = "http://127.0.0.1:8000"
    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        token = getattr(options, "mimo_http_token", "") if options else ""
        self.max_new_tokens = int(getattr(options, "mimo_max_new_tokens", 32) if options else 32)
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.url = str(self.host).rstrip("/") + "/v1/chat/completions"
        self.rng = random.Random()

    def _report(
        self, name: str, elapsed_s: float, length: int = 0, error: Exception | None = None, kind: str = CALL_TYPE
    ) -> None:
        self.environment.events.request.fire(
            request_type=kind, name=name, response_time=elapsed_s * 1000.0, response_length=length,
            exception=error, context={},
        )  # fmt: skip

    def _body(self, stream: bool) -> dict[str, Any]:
        question = self.rng.choice(QUESTIONS)
        return {
            "model": "mimo", "messages": [{"role": "user", "content": question}],
            "max_tokens": self.max_new_tokens, "stream": stream,
        }  # fmt: skip

    @task
    def chat(self) -> None:
        started = time.perf_counter()
        try:
            r = self.session.post(self.url, json=self._body(False), timeout=120)
            if r.status_code != 200:
                raise HttpStatusError(r.status_code, r.text)
            tokens = int(r.json()["usage"]["completion_tokens"])
        except (requests.RequestException, HttpStatusError, ValueError, KeyError) as e:
            self._report("HTTP chat", time.perf_counter() - started, error=e)
            return
        self._report("HTTP chat", time.perf_counter() - started, tokens)

    @task
    def chat_stream(self) -> None:
        """TTFT: the first chunk with text; ITL: each gap between chunks with text; TPOT over the rest."""
        name, started = "HTTP chat_stream", time.perf_counter()
        chunks, first_at, last_at = 0, 0.0, 0.0
        try:
            with self.session.post(self.url, json=self._body(True), timeout=120, stream=True) as r:
                if r.status_code != 200:
                    raise HttpStatusError(r.status_code, r.text)
                for line in r.iter_lines():
                    if not line.startswith(b"data: {"):
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:
                        raise HttpStatusError(200, json.dumps(event))
                    delta = event["choices"][0]["delta"] if event.get("choices") else {}
                    if not (delta.get("content") or delta.get("reasoning_content")):
                        continue
                    now = time.perf_counter()
                    if chunks == 0:
                        first_at = now
                        self._report(f"{name} ttft", now - started, kind=STREAM_TYPE)
                    else:
                        self._report(f"{name} itl", now - last_at, kind=STREAM_TYPE)
                    chunks, last_at = chunks + 1, now
        except (requests.RequestException, HttpStatusError, ValueError, KeyError) as e:
            self._report(name, time.perf_counter() - started, chunks, e)
            return
        if chunks > 1:
            self._report(f"{name} tpot", (last_at - first_at) / (chunks - 1), kind=STREAM_TYPE)
        self._report(name, time.perf_counter() - started, chunks)
