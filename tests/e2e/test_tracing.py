"""One rollout is one trace across router → worker → verifier: every server runs with the standard
OTEL_TRACES_EXPORTER=console, and the spans they print are read back from their logs."""

from __future__ import annotations

import json

import grpc
import pytest
from mimo_client.v1 import common_pb2, rollout_pb2, verifier_pb2

from tests.support.router_stack import rollout_stub, sim_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def spans_in(text: str) -> list[dict]:
    """The JSON span objects ConsoleSpanExporter printed (multi-line, one after another) among JSON log lines."""
    decoder, spans, i = json.JSONDecoder(), [], 0
    while (start := text.find("{", i)) >= 0:
        try:
            obj, i = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            i = start + 1
            continue
        if isinstance(obj, dict) and "context" in obj and "name" in obj:
            spans.append(obj)
    return spans


async def test_a_rollout_is_one_trace_across_router_worker_and_verifier(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    prompt = rollout_pb2.RolloutPrompt(
        prompt_id="p0",
        messages=rollout_pb2.ChatMessages(messages=[common_pb2.ChatMessage(role="user", content="2 + 2?")]),
        math=verifier_pb2.MathTask(references=["4"]),
    )
    request = rollout_pb2.RolloutRequest(
        prompts=[prompt], samples_per_prompt=1, sampling=common_pb2.SamplingParams(max_new_tokens=8)
    )
    async with sim_stack(model_dir, tmp_path, num_workers=1, time_scale=0.1, with_verifier=True) as stack:
        async with grpc.aio.insecure_channel(stack.child("router").spec.target) as channel:
            events = [e async for e in rollout_stub(channel).Rollout(request, timeout=60)]
        assert events[-1].HasField("finished")
        logs = {c.spec.name: c.log_file for c in stack.children}
    by_service = {name: spans_in(logs[name].read_text()) for name in ("router", "worker-0", "verifier")}
    rollout = next(s for s in by_service["router"] if s["name"].endswith("/mimo.v1.Rollout/Rollout"))
    trace_id = rollout["context"]["trace_id"]
    generate = [s for s in by_service["worker-0"] if s["name"].endswith("SglangScheduler/Generate")]
    verify = [s for s in by_service["verifier"] if s["name"].endswith("mimo.v1.Verifier/Verify")]
    assert any(s["context"]["trace_id"] == trace_id for s in generate), generate[:1]
    assert any(s["context"]["trace_id"] == trace_id for s in verify), verify[:1]
    router_lines = [json.loads(line) for line in logs["router"].read_text().splitlines() if line.startswith('{"ts"')]
    assert router_lines  # JSON log lines still come out beside the spans
