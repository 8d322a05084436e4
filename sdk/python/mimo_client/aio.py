"""`AsyncMimoClient`: the asyncio client over grpc.aio channels; the same methods as `MimoClient`, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypeVar, overload

import grpc
import grpc.aio

from mimo_client import _calls
from mimo_client import types as t
from mimo_client._calls import CallSpec
from mimo_client._channel import ClientBase
from mimo_client._convert import ChatInput
from mimo_client._progress import RolloutProgress
from mimo_client.errors import from_rpc_error

T = TypeVar("T")


class AsyncMimoClient(ClientBase):
    """asyncio client of MiMo Serve. Use as `async with` or `await close()`; make it inside the running loop.

    Every method takes `timeout_s` (None: the client default; `math.inf`: no deadline) and raises a
    `MimoError` subclass on failure. Sampling options are keyword arguments (temperature, top_p, top_k,
    max_new_tokens, stop, seed, ...); the ones not given take the server's MiMo defaults."""

    _grpc_module = grpc.aio

    async def __aenter__(self) -> AsyncMimoClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    # -- inference

    async def generate(
        self, prompt: str | Sequence[int], *, model: str = "", n: int = 1, return_logprobs: bool = False,
        top_logprobs: int = 0, priority: int = 0, request_id: str = "", split_reasoning: bool = False,
        timeout_s: float | None = None, **sampling: Any,
    ) -> t.Completion:  # fmt: skip
        """Complete a raw prompt (text or token ids)."""
        spec = _calls.generate(
            prompt, sampling, model=model, n=n, return_logprobs=return_logprobs, top_logprobs=top_logprobs,
            priority=priority, request_id=request_id, split_reasoning=split_reasoning,
        )  # fmt: skip
        return await self._unary(spec, timeout_s)

    def generate_stream(
        self, prompt: str | Sequence[int], *, model: str = "", n: int = 1, return_logprobs: bool = False,
        top_logprobs: int = 0, priority: int = 0, request_id: str = "", split_reasoning: bool = False,
        timeout_s: float | None = None, **sampling: Any,
    ) -> AsyncIterator[t.StreamDelta]:  # fmt: skip
        """Like `generate`, as deltas while they are produced."""
        spec = _calls.generate_stream(
            prompt, sampling, model=model, n=n, return_logprobs=return_logprobs, top_logprobs=top_logprobs,
            priority=priority, request_id=request_id, split_reasoning=split_reasoning,
        )  # fmt: skip
        return self._stream(spec, timeout_s)

    async def chat(
        self, messages: ChatInput, *, model: str = "", n: int = 1, return_logprobs: bool = False,
        top_logprobs: int = 0, priority: int = 0, request_id: str = "", timeout_s: float | None = None,
        **sampling: Any,
    ) -> t.Completion:  # fmt: skip
        """Answer a conversation; each choice has MiMo's `reasoning` split from its `text`."""
        spec = _calls.chat(
            messages, sampling, model=model, n=n, return_logprobs=return_logprobs, top_logprobs=top_logprobs,
            priority=priority, request_id=request_id,
        )  # fmt: skip
        return await self._unary(spec, timeout_s)

    def chat_stream(
        self, messages: ChatInput, *, model: str = "", n: int = 1, return_logprobs: bool = False,
        top_logprobs: int = 0, priority: int = 0, request_id: str = "", timeout_s: float | None = None,
        **sampling: Any,
    ) -> AsyncIterator[t.StreamDelta]:  # fmt: skip
        """Like `chat`, as deltas while they are produced."""
        spec = _calls.chat_stream(
            messages, sampling, model=model, n=n, return_logprobs=return_logprobs, top_logprobs=top_logprobs,
            priority=priority, request_id=request_id,
        )  # fmt: skip
        return self._stream(spec, timeout_s)

    async def list_models(self, *, timeout_s: float | None = None) -> list[t.ModelInfo]:
        return await self._unary(_calls.list_models(), timeout_s)

    # -- tokenizer

    @overload
    async def tokenize(  # type: ignore[overload-overlap]
        self, texts: str, *, add_special_tokens: bool = ..., return_offsets: bool = ..., timeout_s: float | None = ...
    ) -> t.TokenizeResult: ...
    @overload
    async def tokenize(
        self,
        texts: Sequence[str],
        *,
        add_special_tokens: bool = ...,
        return_offsets: bool = ...,
        timeout_s: float | None = ...,
    ) -> list[t.TokenizeResult]: ...
    async def tokenize(
        self, texts: str | Sequence[str], *, add_special_tokens: bool = False, return_offsets: bool = False,
        timeout_s: float | None = None,
    ) -> t.TokenizeResult | list[t.TokenizeResult]:  # fmt: skip
        """One text -> one result; a list of texts -> a list of results."""
        return await self._unary(_calls.tokenize(texts, add_special_tokens, return_offsets), timeout_s)

    @overload
    async def detokenize(
        self, ids: Sequence[int], *, skip_special_tokens: bool = ..., timeout_s: float | None = ...
    ) -> str: ...
    @overload
    async def detokenize(
        self, ids: Sequence[Sequence[int]], *, skip_special_tokens: bool = ..., timeout_s: float | None = ...
    ) -> list[str]: ...
    async def detokenize(
        self, ids: Sequence[int] | Sequence[Sequence[int]], *, skip_special_tokens: bool = False,
        timeout_s: float | None = None,
    ) -> str | list[str]:  # fmt: skip
        """One id list -> one text; a list of id lists -> a list of texts."""
        return await self._unary(_calls.detokenize(ids, skip_special_tokens), timeout_s)

    async def apply_chat_template(
        self, messages: ChatInput, *, add_generation_prompt: bool = True, timeout_s: float | None = None
    ) -> t.ChatTemplateResult:
        """The prompt text and ids MiMo's chat template makes of `messages`."""
        return await self._unary(_calls.apply_chat_template(messages, add_generation_prompt), timeout_s)

    @overload
    async def count_tokens(  # type: ignore[overload-overlap]
        self, texts: str, *, add_special_tokens: bool = ..., timeout_s: float | None = ...
    ) -> int: ...
    @overload
    async def count_tokens(
        self, texts: Sequence[str], *, add_special_tokens: bool = ..., timeout_s: float | None = ...
    ) -> list[int]: ...
    async def count_tokens(
        self, texts: str | Sequence[str], *, add_special_tokens: bool = False, timeout_s: float | None = None
    ) -> int | list[int]:
        return await self._unary(_calls.count_tokens(texts, add_special_tokens), timeout_s)

    # -- verifier

    async def verify_math(
        self, response: str, references: str | Sequence[str], *, task_id: str = "", timeout_s: float | None = None
    ) -> t.VerifyResult:
        """Reward a math response: its last \\boxed{} answer against any of `references`."""
        task = t.VerifyTask(response, _calls.math_task(references), task_id)
        return await self._unary(_calls.verify_one(task), timeout_s)

    async def verify_code(
        self, response: str, tests: Sequence[t.CodeTest | Mapping[str, Any]], *, task_id: str = "",
        timeout_s: float | None = None, **options: Any,
    ) -> t.VerifyResult:  # fmt: skip
        """Reward a code response against `tests`; `options` are `CodeTask` fields (language, reward_mode, ...)."""
        task = t.VerifyTask(response, _calls.code_task(tests, **options), task_id)
        return await self._unary(_calls.verify_one(task), timeout_s)

    async def verify(self, tasks: Sequence[t.VerifyTask], *, timeout_s: float | None = None) -> list[t.VerifyResult]:
        """Verify a batch; results in the order of `tasks`."""
        return await self._unary(_calls.verify(tasks), timeout_s)

    # -- rollout

    def rollout(
        self, prompts: Sequence[t.RolloutPrompt], *, samples_per_prompt: int = 1, rollout_id: str = "",
        weight_version: str = "", max_samples_in_flight: int = 0, early_termination: str = "never",
        target_prompts: int = 0, mode: str = "seamless", sync_batch_prompts: int = 0, progress: bool = False,
        target_valid_groups: int = 0, oversampling: float = 0.0, max_prompts_launched: int = 0, dataset: str = "",
        scorer: str = "", min_weight_version: str = "", partial_rollout: bool = False, timeout_s: float | None = None,
        **sampling: Any,
    ) -> AsyncIterator[t.RolloutEvent]:  # fmt: skip
        """Events as they happen: `SampleFinished` (with its reward), `GroupFinished`, then one `RolloutFinished`.

        `progress=True` shows a tqdm bar of finished samples (if tqdm is installed). Dynamic sampling:
        `target_valid_groups` groups with reward variance (zero-variance groups dropped), `early_termination=
        "launch_order"` for MiMo's rule, `dataset` to draw from a router-registered dataset (its easy pool and pass
        rates), `scorer` (host:port of a mimo.v1.Verifier) for open rewards. `min_weight_version`: refuse
        (FailedPrecondition) unless the fleet serves at least that version (see `update_weights`). `partial_rollout`:
        early termination returns the samples still running aborted, with their tokens (`SampleFinished.partial()`,
        resumable through `RolloutPrompt(resume=...)`), instead of dropping them."""
        spec, num_samples = _calls.rollout(
            prompts, samples_per_prompt, sampling, rollout_id=rollout_id, weight_version=weight_version,
            max_samples_in_flight=max_samples_in_flight, early_termination=early_termination,
            target_prompts=target_prompts, mode=mode, sync_batch_prompts=sync_batch_prompts,
            target_valid_groups=target_valid_groups, oversampling=oversampling,
            max_prompts_launched=max_prompts_launched, dataset=dataset, scorer=scorer,
            min_weight_version=min_weight_version, partial_rollout=partial_rollout,
        )  # fmt: skip
        return self._with_progress(self._stream(spec, timeout_s), progress, num_samples)

    # -- admin (RL weight sync)

    async def update_weights(
        self, model_path: str, weight_version: str, *, abort_running: bool = False, update_timeout_s: float = 0.0,
        timeout_s: float | None = None,
    ) -> t.WeightUpdate:  # fmt: skip
        """Load the checkpoint directory `model_path` on every worker as `weight_version` (one update at a time).

        Running rollouts finish first unless `abort_running` (their in-flight samples then come back aborted, with
        their partial tokens); requests meanwhile wait in the router. Workers that failed are in `.failed` (out of
        routing); when every worker refuses the checkpoint this raises `InvalidArgument` and the old weights
        keep serving. `update_timeout_s` bounds the wait for rollouts and each worker's load (0: the router's
        600 s); give `timeout_s` at least as long (a 7B checkpoint loads in tens of seconds)."""
        spec = _calls.update_weights(model_path, weight_version, abort_running, update_timeout_s)
        return await self._unary(spec, timeout_s)

    async def weight_versions(self, *, timeout_s: float | None = None) -> t.WeightVersions:
        """The fleet's weight version and each worker's (with why a worker gets no traffic)."""
        return await self._unary(_calls.weight_versions(), timeout_s)

    # -- execution

    async def _unary(self, spec: CallSpec[T], timeout_s: float | None) -> T:
        attempts = self._attempts(spec, timeout_s, is_stream=False)
        while True:
            try:
                reply = await self._rpc(spec)(spec.request, timeout=attempts.start(), metadata=self.settings.metadata)
                return spec.convert(reply)
            except grpc.RpcError as e:
                error = from_rpc_error(e)
                delay_s = attempts.retry_delay_s(error, received=False)
                if delay_s is None:
                    raise error from None
            await asyncio.sleep(delay_s)

    async def _stream(self, spec: CallSpec[T | None], timeout_s: float | None) -> AsyncIterator[T]:
        attempts = self._attempts(spec, timeout_s, is_stream=True)
        while True:
            call, is_received = None, False
            try:
                call = self._rpc(spec)(spec.request, timeout=attempts.start(), metadata=self.settings.metadata)
                async for message in call:
                    is_received = True
                    item = spec.convert(message)
                    if item is not None:
                        yield item
                return
            except grpc.RpcError as e:
                error = from_rpc_error(e)
                delay_s = attempts.retry_delay_s(error, received=is_received)
                if delay_s is None:
                    raise error from None
            finally:
                if call is not None:
                    call.cancel()  # a no-op once done; tells the server when the caller stops reading
            await asyncio.sleep(delay_s)

    @staticmethod
    async def _with_progress(
        events: AsyncIterator[t.RolloutEvent], is_enabled: bool, num_samples: int
    ) -> AsyncIterator[t.RolloutEvent]:
        progress = RolloutProgress(is_enabled, num_samples)
        try:
            async for event in events:
                progress.update(event)
                yield event
        finally:
            progress.close()
