"""The path every generation takes, whatever front end it came from:
prepare (tokens, limits, worker request) → admit → route → dispatch → assemble (text, metrics)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from services.common.auth import charge_current
from services.common.logs import REQUEST_ID
from services.router import metrics
from services.router.admission import Admission
from services.router.dispatch import Dispatcher
from services.router.domain import (
    Choice,
    Delta,
    GenerationRequest,
    InvalidRequest,
    PartialSample,
    SampleComplete,
    Sampling,
    SamplingDefaults,
    TokenLogprob,
    Unavailable,
    UnknownModel,
    Usage,
    WorkerRequest,
)
from services.router.outputs import Sample, new_samples, usage
from services.router.policy import RouteRequest
from services.router.prompts import TokenizerSnapshot

DEFAULT_MAX_CONTEXT = 32768
DEFAULT_MAX_NEW_TOKENS = 2048
OFF_LOOP_CHARS = 16_384  # prompts longer than this are tokenized in a thread, so the event loop stays free


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What ListModels (and GET /v1/models) report."""

    id: str
    max_context_tokens: int
    vocab_size: int
    num_workers: int
    mtp_enabled: bool


@dataclass(slots=True)
class Generation:
    """One prepared request and, while it runs, its samples."""

    request: GenerationRequest
    input_ids: tuple[int, ...]
    worker_request: WorkerRequest
    samples: list[Sample] = field(default_factory=list)
    resumed: int = 0  # the last `resumed` input ids are a partial sample's tokens (prepare's `resume`)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def usage(self) -> Usage:
        return usage(self.samples, len(self.input_ids))

    def choices(self) -> list[Choice]:
        return [s.choice() for s in self.samples]


def resolve_sampling(s: Sampling, defaults: SamplingDefaults, stop_token_ids: tuple[int, ...]) -> Sampling:
    """Every field explicit: proto3 zeros are not SGLang's defaults."""
    return replace(
        s,
        temperature=defaults.temperature if s.temperature is None else s.temperature,
        top_p=defaults.top_p if s.top_p is None else s.top_p,
        top_k=-1 if s.top_k is None else s.top_k,
        min_p=0.0 if s.min_p is None else s.min_p,
        repetition_penalty=1.0 if s.repetition_penalty is None else s.repetition_penalty,
        stop_token_ids=tuple(sorted({*s.stop_token_ids, *stop_token_ids})),
    )


def new_token_budget(s: Sampling, num_prompt_tokens: int, max_context: int) -> int:
    room = max_context - num_prompt_tokens
    if room <= 0:
        raise InvalidRequest("input", f"the prompt has {num_prompt_tokens} tokens; the context holds {max_context}")
    if s.max_new_tokens is None:
        return min(DEFAULT_MAX_NEW_TOKENS, room)
    if s.max_new_tokens > room:
        raise InvalidRequest(
            "sampling.max_new_tokens",
            f"{s.max_new_tokens} new tokens after a {num_prompt_tokens}-token prompt exceed the context of {max_context}",
        )
    return s.max_new_tokens


def check_ids(ids: tuple[int, ...], vocab_size: int, field: str) -> None:
    if not ids:
        raise InvalidRequest(field, "must not be empty")
    bad = next((t for t in ids if t >= vocab_size), None)
    if bad is not None:
        raise InvalidRequest(field, f"token id {bad} is outside the vocabulary (size {vocab_size})")


class Pipeline:
    def __init__(
        self,
        dispatcher: Dispatcher,
        admission: Admission,
        tokenizer: Callable[[], TokenizerSnapshot],
        model_name: str,
    ) -> None:
        self._dispatcher = dispatcher
        self._pool = dispatcher.pool
        self._admission = admission
        self._tokenizer = tokenizer
        self.model_name = model_name

    # --- the model ---------------------------------------------------------------------------------------------
    @property
    def max_context(self) -> int:
        info = self._pool.any_model_info()
        return info.max_context_length if info and info.max_context_length > 0 else DEFAULT_MAX_CONTEXT

    @property
    def vocab_size(self) -> int:
        return self._tokenizer().vocab_size

    def check_model(self, model: str) -> None:
        if model and model != self.model_name:
            raise UnknownModel(model, self.model_name)

    def model_card(self) -> ModelCard:
        routable = self._pool.routable()
        return ModelCard(
            self.model_name,
            self.max_context,
            self.vocab_size,
            len(routable),
            any(w.load.accept_length > 0 for w in routable),
        )

    # --- prepare -----------------------------------------------------------------------------------------------
    async def input_ids(self, request: GenerationRequest) -> tuple[int, ...]:
        """The prompt's token ids; long texts are tokenized off the event loop."""
        snapshot, prompt = self._tokenizer(), request.prompt
        if prompt.token_ids is not None:
            check_ids(prompt.token_ids, snapshot.vocab_size, "input")
            return prompt.token_ids
        if prompt.messages is not None:
            size = sum(len(m.content) for m in prompt.messages)
            render = snapshot.chat_ids
            ids = await asyncio.to_thread(render, prompt.messages) if size > OFF_LOOP_CHARS else render(prompt.messages)
        else:
            text = prompt.text or ""
            ids = (
                await asyncio.to_thread(snapshot.encode, text) if len(text) > OFF_LOOP_CHARS else snapshot.encode(text)
            )
        if not ids:
            raise InvalidRequest("input", "the prompt encodes to no tokens")
        return tuple(ids)

    async def prepare(
        self, request: GenerationRequest, input_ids: tuple[int, ...] | None = None, resume: PartialSample | None = None
    ) -> Generation:
        """`resume`: continue a partial sample (n must be 1): the worker gets the prompt plus its tokens, and the
        sample starts with them (max_new_tokens counts them)."""
        REQUEST_ID.set(request.request_id)
        snapshot = self._tokenizer()
        ids = input_ids if input_ids is not None else await self.input_ids(request)
        sampling_asked = request.sampling
        if resume is not None:
            done = len(resume.token_ids)
            if sampling_asked.max_new_tokens is not None:
                if sampling_asked.max_new_tokens <= done:
                    raise InvalidRequest("resume.token_ids", f"{done} tokens already reach max_new_tokens")
                sampling_asked = replace(sampling_asked, max_new_tokens=sampling_asked.max_new_tokens - done)
            ids = (*ids, *resume.token_ids)
        bad_stop = next((t for t in request.sampling.stop_token_ids if t >= snapshot.vocab_size), None)
        if bad_stop is not None:
            raise InvalidRequest(
                "sampling.stop_token_ids", f"token id {bad_stop} is outside the vocabulary (size {snapshot.vocab_size})"
            )
        sampling = resolve_sampling(request.sampling, request.defaults, snapshot.stop_token_ids)
        worker_request = WorkerRequest(
            # unique per worker request: two callers reusing one request id never collide on a worker
            request_id=f"{request.request_id}-{uuid.uuid4().hex[:8]}",
            input_ids=ids,
            sampling=sampling,
            n=request.n,
            max_new_tokens=new_token_budget(sampling_asked, len(ids), self.max_context),
            return_logprobs=request.return_logprobs,
            top_logprobs=request.top_logprobs,
            stream=request.stream,
        )
        s = request.sampling
        samples = new_samples(
            snapshot.tokenizer, request.n, s.stop, s.include_stop_str_in_output, request.split_reasoning
        )
        if resume is not None:
            lps = tuple(TokenLogprob(t, lp, ()) for t, lp in zip(resume.token_ids, resume.logprobs, strict=False))
            samples[0].resume(resume.token_ids, lps)
        return Generation(request, ids, worker_request, samples, resumed=len(resume.token_ids) if resume else 0)

    async def abort(self, gen: Generation) -> bool:
        """End `gen` on its worker now: its samples come back finished "abort" with their partial tokens. False when
        it is not on a worker (still queued, or done)."""
        return await self._dispatcher.abort_running(gen.worker_request.request_id)

    # --- admit → route → dispatch → assemble -------------------------------------------------------------------
    async def stream(self, gen: Generation) -> AsyncIterator[Delta]:
        """Deltas of all samples as they arrive; `gen.samples` holds the final state afterwards."""
        request = gen.request
        remaining = None if request.deadline is None else request.deadline - time.monotonic()
        async with self._admission.slot(request.priority, remaining):
            metrics.PROMPT_TOKENS.inc(len(gen.input_ids))
            route = RouteRequest(gen.input_ids, request.n, request.group_key)
            first = last = 0.0
            async for event in self._dispatcher.generate(gen.worker_request, route, request.deadline):
                sample = gen.samples[min(event.index, request.n - 1)]
                delta = sample.complete(event) if isinstance(event, SampleComplete) else sample.add_tokens(event)
                if delta.token_ids:
                    now = time.monotonic()
                    if request.stream:  # unary calls get their tokens all at once: no TTFT or ITL to speak of
                        if not first:
                            first = now
                            metrics.TTFT.labels(request.method).observe(now - request.arrived)
                        else:
                            metrics.ITL.observe(now - last)
                        last = now
                    metrics.GENERATED_TOKENS.inc(len(delta.token_ids))
                yield delta
            metrics.E2E.labels(request.method).observe(time.monotonic() - request.arrived)
            charge_current(gen.usage().total_tokens)  # the caller's API key, whichever front end it came through
        unfinished = [s.index for s in gen.samples if not s.is_done]
        if unfinished:
            raise Unavailable(f"the worker's stream ended without finishing samples {unfinished}")

    async def run(self, gen: Generation) -> Generation:
        """Run to the end (unary calls); returns `gen` with its samples complete."""
        async for _ in self.stream(gen):
            pass
        return gen
