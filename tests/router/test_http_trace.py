"""An OpenAI HTTP chat that carries a W3C `traceparent` header is traced under it: the router's HTTP span is a child
of the caller's span and the worker's Generate span is in the same trace.

Every server is a real process with the standard OTEL_TRACES_EXPORTER=console; the spans are read back from their
logs, as tests/e2e/test_tracing.py does for gRPC (an in-memory exporter would need the router in this process).
"""

from __future__ import annotations

import aiohttp
import pytest

from tests.e2e.test_tracing import spans_in
from tests.support.router_stack import http_base_url, sim_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


async def test_an_http_chat_with_traceparent_is_one_trace_under_the_callers_span(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    body = {"model": "mimo", "messages": [{"role": "user", "content": "2 + 2?"}], "max_tokens": 4}
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"}
    async with sim_stack(model_dir, tmp_path, num_workers=1, time_scale=0.1) as stack:
        url = http_base_url(stack) + "/chat/completions"
        async with aiohttp.ClientSession() as session, session.post(url, json=body, headers=headers) as reply:
            assert reply.status == 200, await reply.text()
            assert (await reply.json())["choices"]
        logs = {c.spec.name: c.log_file for c in stack.children if c.log_file is not None}
    router = spans_in(logs["router"].read_text())
    worker = spans_in(logs["worker-0"].read_text())
    http = [s for s in router if s.get("kind") == "SpanKind.SERVER" and "chat/completions" in s["name"]]
    assert http, [s["name"] for s in router]
    assert http[0]["context"]["trace_id"] == f"0x{TRACE_ID}"
    assert http[0]["parent_id"] == f"0x{PARENT_SPAN_ID}"
    generate = [s for s in worker if s["name"].endswith("SglangScheduler/Generate")]
    assert any(s["context"]["trace_id"] == f"0x{TRACE_ID}" for s in generate), generate[:1]
