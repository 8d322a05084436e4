"""OpenTelemetry tracing for every server and its gRPC clients, off unless the standard variables ask for it.

`OTEL_TRACES_EXPORTER=otlp` (needs `opentelemetry-exporter-otlp-proto-grpc`; endpoint from
`OTEL_EXPORTER_OTLP_ENDPOINT`) or `console` turns it on; `OTEL_SERVICE_NAME` names the service (default
`mimo-<service>`). Spans come from opentelemetry-instrumentation-grpc's interceptors, which carry `traceparent` in
gRPC metadata, so one call is one trace across router → worker → verifier; and from
opentelemetry-instrumentation-aiohttp-server, whose middleware makes an HTTP request's W3C `traceparent` header
the parent of the router's span for it (the OpenAI HTTP front).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

log = logging.getLogger(__name__)


def is_enabled() -> bool:
    return os.environ.get("OTEL_TRACES_EXPORTER", "none").lower() not in ("", "none")


def setup_tracing(service: str) -> None:
    """Install a tracer provider with the exporter OTEL_TRACES_EXPORTER names (nothing when it is unset)."""
    if not is_enabled():
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or f"mimo-{service}"})
    )
    for name in os.environ["OTEL_TRACES_EXPORTER"].lower().split(","):
        if name == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            except ImportError:
                log.warning("OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-grpc; no traces")
                continue
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            log.warning("unknown OTEL_TRACES_EXPORTER entry; ignored", extra={"exporter": name})
    trace.set_tracer_provider(provider)
    # Every aiohttp.web.Application made after this gets the tracing middleware (it extracts `traceparent`);
    # servers build theirs after setup_tracing (services/common/server.py run()).
    AioHttpServerInstrumentor().instrument(tracer_provider=provider)


def server_interceptors() -> list[Any]:
    return [aio_server_interceptor()] if is_enabled() else []


def client_interceptors() -> list[Any]:
    """For `grpc.aio.insecure_channel(..., interceptors=client_interceptors())`: propagate the trace."""
    return list(aio_client_interceptors()) if is_enabled() else []
