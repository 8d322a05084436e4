"""JSON log lines on stderr, one object per line."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

from opentelemetry import trace

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

# The request being served (set by the router's pipeline), so every log line of a call can be found.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("mimo_request_id", default=None)


def correlation() -> dict[str, str]:
    """The current request id and trace/span ids (when tracing is on), for log lines."""
    out = {}
    if (request_id := REQUEST_ID.get()) is not None:
        out["request_id"] = request_id
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        out["trace_id"], out["span_id"] = f"{span.trace_id:032x}", f"{span.span_id:016x}"
    return out


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; `extra={...}` fields become keys."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **correlation(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON lines at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
