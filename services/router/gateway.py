"""The path every generation takes: admission, prompt checks, dispatch to a worker, text assembly, metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import grpc
from mimo_client.v1 import common_pb2, inference_pb2

from services.router import metrics
from services.router.admission import Admission
from services.router.dispatch import Dispatcher, DispatchError
from services.router.outputs import Sample, logprobs_of, new_samples, usage
from services.router.policy import RouteRequest
from services.router.requests import (
    CHAT_DEFAULTS,
    InvalidRequest,
    SamplingDefaults,
    max_new_tokens,
    validate_input_ids,
    worker_request,
    worker_sampling,
)
from services.router.tokenization import RouterTokenizer

DEFAULT_MAX_CONTEXT = 32768


@dataclass(slots=True)
class Job:
    """One validated generation: the prompt tokens and what to do with them."""

    method: str
    input_ids: list[int]
    sampling: common_pb2.SamplingParams
    n: int = 1
    return_logprobs: bool = False
    top_logprobs: int = 0
    priority: int = 0
    split_reasoning: bool = False
    stream: bool = False
    request_id: str = ""
    group_key: str | None = None
    defaults: SamplingDefaults = CHAT_DEFAULTS
    deadline: float | None = None  # time.monotonic() seconds
    arrived: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.request_id = self.request_id or f"mimo-{uuid.uuid4().hex[:24]}"


class Gateway:
    def __init__(
        self, dispatcher: Dispatcher, tokenizer: RouterTokenizer, admission: Admission, model_name: str
    ) -> None:
        self.dispatcher = dispatcher
        self.tokenizer = tokenizer
        self.admission = admission
        self.model_name = model_name

    @property
    def max_context(self) -> int:
        info = self.dispatcher.pool.any_model_info()
        return info.max_context_length if info and info.max_context_length > 0 else DEFAULT_MAX_CONTEXT

    def check_model(self, model: str) -> None:
        if model and model != self.model_name:
            raise InvalidRequest("model", f"unknown model {model!r}; this router serves {self.model_name!r}")

    async def run(self, job: Job) -> AsyncIterator[inference_pb2.StreamDelta]:
        """Deltas of all samples as they arrive; `job.samples` holds the final state afterwards."""
        snapshot = self.tokenizer.snapshot
        validate_input_ids(job.input_ids, snapshot.vocab_size, "input")
        new_tokens = max_new_tokens(job.sampling, len(job.input_ids), self.max_context)
        sampling = worker_sampling(job.sampling, job.n, new_tokens, job.defaults, snapshot.stop_token_ids)
        request = worker_request(
            job.request_id, job.input_ids, sampling, job.return_logprobs, job.top_logprobs, stream=job.stream
        )
        job.samples = new_samples(
            snapshot.tokenizer,
            job.n,
            list(job.sampling.stop),
            job.sampling.include_stop_str_in_output,
            job.split_reasoning,
        )
        remaining = None if job.deadline is None else job.deadline - time.monotonic()
        async with self.admission.slot(job.priority, remaining):
            metrics.PROMPT_TOKENS.inc(len(job.input_ids))
            route = RouteRequest(job.input_ids, job.n, job.group_key)
            first = last = 0.0
            async for response in self.dispatcher.generate(request, route, job.deadline):
                now = time.monotonic()
                if response.HasField("chunk"):
                    chunk = response.chunk
                    sample = job.samples[min(chunk.index, job.n - 1)]
                    delta = sample.add_tokens(list(chunk.token_ids), logprobs_of(chunk.output_logprobs))
                else:
                    sample = job.samples[min(response.complete.index, job.n - 1)]
                    delta = sample.complete(response.complete)
                if delta.token_ids:
                    if job.stream:  # unary calls get their tokens all at once: no TTFT or ITL to speak of
                        if not first:
                            first = now
                            metrics.TTFT.labels(job.method).observe(now - job.arrived)
                        else:
                            metrics.ITL.observe(now - last)
                        last = now
                    metrics.GENERATED_TOKENS.inc(len(delta.token_ids))
                yield delta
            metrics.E2E.labels(job.method).observe(time.monotonic() - job.arrived)
        unfinished = [s.index for s in job.samples if not s.is_done]
        if unfinished:
            raise DispatchError(
                grpc.StatusCode.UNAVAILABLE, f"worker stream ended without finishing samples {unfinished}"
            )

    async def collect(self, job: Job) -> tuple[list[inference_pb2.Choice], common_pb2.Usage]:
        async for _ in self.run(job):
            pass
        return [s.choice() for s in job.samples], usage(job.samples, len(job.input_ids))

    def usage(self, job: Job) -> common_pb2.Usage:
        return usage(job.samples, len(job.input_ids))

    def chat_ids(self, messages: Sequence[common_pb2.ChatMessage]) -> list[int]:
        return self.tokenizer.chat_ids(messages)
