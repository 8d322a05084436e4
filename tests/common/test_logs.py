"""Log lines carry the request id and, inside a span, the trace and span ids."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from services.common.logs import REQUEST_ID, JsonFormatter


def line(message: str) -> dict:
    return json.loads(JsonFormatter().format(logging.makeLogRecord({"msg": message, "levelname": "INFO"})))


def test_request_and_trace_ids_on_every_line():
    assert "request_id" not in line("idle") and "trace_id" not in line("idle")
    token = REQUEST_ID.set("mimo-abc")
    try:
        with TracerProvider().get_tracer("t").start_as_current_span("call") as span:
            out = line("working")
        assert out["request_id"] == "mimo-abc"
        assert out["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    finally:
        REQUEST_ID.reset(token)
