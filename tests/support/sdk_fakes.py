"""In-process fakes of the mimo.v1 services with canned but realistic replies, scripted to fail or stall.

They test the client only (the real servers are tested elsewhere): a threaded grpc server on loopback, so
both the blocking and the asyncio client can call it from a test's event loop."""

from __future__ import annotations

import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from mimo_client.v1 import (
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    rollout_pb2,
    rollout_pb2_grpc,
    tokenizer_pb2,
    tokenizer_pb2_grpc,
    verifier_pb2,
    verifier_pb2_grpc,
)

ANSWER = "The answer is \\boxed{4}."
REASONING = "2 + 2 = 4."
STOP, LENGTH = common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH

Failure = tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]


@dataclass
class Script:
    """What the fakes do and what they saw; tests set the knobs, the servicers read them."""

    failures: dict[str, list[Failure]] = field(default_factory=lambda: defaultdict(list))  # per RPC, in order
    fail_after_first: dict[str, Failure] = field(default_factory=dict)  # streams: one message, then this
    delay_s: dict[str, float] = field(default_factory=dict)
    stall_after_first: set[str] = field(default_factory=set)  # streams: one message, then wait to be cancelled
    cancelled: threading.Event = field(default_factory=threading.Event)  # a stalled stream saw its client cancel
    expected_token: str | None = None
    calls: Counter[str] = field(default_factory=Counter)
    requests: dict[str, Any] = field(default_factory=dict)  # last request per RPC
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)  # last invocation metadata per RPC
    release: threading.Event = field(default_factory=threading.Event)  # wakes stalled handlers at teardown
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, rpc: str, code: grpc.StatusCode, message: str, times: int = 1, trailing: Any = ()) -> None:
        self.failures[rpc].extend([(code, message, tuple(trailing))] * times)

    def enter(self, rpc: str, request: Any, context: grpc.ServicerContext) -> None:
        """Record the call, then stall or fail it as scripted."""
        metadata = {k: v for k, v in context.invocation_metadata()}
        with self.lock:
            self.calls[rpc] += 1
            self.requests[rpc] = request
            self.metadata[rpc] = metadata
            failure = self.failures[rpc].pop(0) if self.failures[rpc] else None
        if self.expected_token and metadata.get("authorization") != f"Bearer {self.expected_token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        delay_s = self.delay_s.get(rpc, 0.0)
        waited_s = 0.0
        while waited_s < delay_s and context.is_active() and not self.release.wait(0.02):
            waited_s += 0.02
        if failure:
            abort(context, failure)

    def watch_cancel(self, context: grpc.ServicerContext) -> threading.Event:
        """From now until the returned event is cleared, the call ending means the client cancelled it.

        A termination callback, not polling: the client may cancel before the handler resumes after a yield."""
        is_watching = threading.Event()
        is_watching.set()
        context.add_callback(lambda: is_watching.is_set() and self.cancelled.set())
        return is_watching

    def stall(self, context: grpc.ServicerContext, is_watching: threading.Event, limit_s: float = 5.0) -> None:
        for _ in range(int(limit_s / 0.01)):
            if not context.is_active() or self.release.wait(0.01):
                break
        is_watching.clear()  # from here on the stream ends normally, which is not a cancel


def abort(context: grpc.ServicerContext, failure: Failure) -> None:
    code, message, trailing = failure
    if trailing:
        context.set_trailing_metadata(trailing)
    context.abort(code, message)


def usage(prompt_tokens: int, completion_tokens: int) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, reasoning_tokens=completion_tokens // 2,
        cached_tokens=0, total_tokens=prompt_tokens + completion_tokens,
    )  # fmt: skip


def encode(text: str) -> list[int]:
    """Byte-level ids: what a byte-level BPE would give before any merge."""
    return list(text.encode())


class FakeInference(inference_pb2_grpc.InferenceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def _choices(self, n: int, sampling: common_pb2.SamplingParams, split: bool) -> list[inference_pb2.Choice]:
        text = ANSWER if split else f"<think>{REASONING}</think>{ANSWER}"
        finish = STOP
        if sampling.HasField("max_new_tokens") and sampling.max_new_tokens < len(encode(text)):
            text, finish = text[: sampling.max_new_tokens], LENGTH
        return [
            inference_pb2.Choice(
                index=i,
                text=text,
                reasoning=REASONING if split else "",
                token_ids=encode(text),
                finish_reason=finish,
                matched_stop="<|im_end|>" if finish == STOP else None,
            )
            for i in range(max(1, n))
        ]

    def Generate(self, request, context):
        self.script.enter("Generate", request, context)
        if request.WhichOneof("input") is None or (request.text == "" and not request.token_ids.ids):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "input: give text or token_ids")
        prompt_tokens = len(encode(request.text)) if request.text else len(request.token_ids.ids)
        choices = self._choices(request.n, request.sampling, request.split_reasoning)
        return inference_pb2.GenerateResponse(
            request_id=request.request_id or "req-1", model="tiny-mimo", choices=choices,
            usage=usage(prompt_tokens, sum(len(c.token_ids) for c in choices)),
        )  # fmt: skip

    def GenerateStream(self, request, context):
        yield from self._stream("GenerateStream", request, context, inference_pb2.GenerateStreamResponse)

    def Chat(self, request, context):
        self.script.enter("Chat", request, context)
        if not request.messages:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "messages: must not be empty")
        choices = self._choices(request.n, request.sampling, split=True)
        prompt_tokens = sum(len(encode(m.content)) + 4 for m in request.messages)
        return inference_pb2.ChatResponse(
            request_id=request.request_id or "chat-1", model="tiny-mimo", choices=choices,
            usage=usage(prompt_tokens, sum(len(c.token_ids) for c in choices)),
        )  # fmt: skip

    def ChatStream(self, request, context):
        yield from self._stream("ChatStream", request, context, inference_pb2.ChatStreamResponse)

    def _stream(self, rpc: str, request: Any, context: grpc.ServicerContext, response: Any) -> Iterator[Any]:
        """Words of ANSWER one per message; the last carries finish_reason, then one more with usage."""
        self.script.enter(rpc, request, context)
        is_watching = self.script.watch_cancel(context) if rpc in self.script.stall_after_first else None
        words = ANSWER.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            is_last = i == len(words) - 1
            delta = common_delta(piece, STOP if is_last else 0)
            yield response(request_id="stream-1", delta=delta)
            if i == 0 and rpc in self.script.fail_after_first:
                abort(context, self.script.fail_after_first[rpc])
            if i == 0 and is_watching is not None:
                self.script.stall(context, is_watching)
                return
        yield response(request_id="stream-1", delta=inference_pb2.StreamDelta(), usage=usage(7, len(encode(ANSWER))))

    def ListModels(self, request, context):
        self.script.enter("ListModels", request, context)
        model = inference_pb2.ModelInfo(
            id="tiny-mimo", max_context_tokens=2048, vocab_size=1024, num_workers=2, mtp_enabled=True
        )
        return inference_pb2.ListModelsResponse(models=[model])


def common_delta(piece: str, finish: int) -> inference_pb2.StreamDelta:
    return inference_pb2.StreamDelta(
        index=0, text=piece, token_ids=encode(piece), finish_reason=finish,  # type: ignore[arg-type]
        matched_stop="<|im_end|>" if finish else None,
    )  # fmt: skip


class FakeTokenizer(tokenizer_pb2_grpc.TokenizerServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def Tokenize(self, request, context):
        self.script.enter("Tokenize", request, context)
        response = tokenizer_pb2.TokenizeResponse()
        for text in request.texts:
            encoding = response.encodings.add(ids=encode(text))
            if request.return_offsets:
                for i, ch in enumerate(text):
                    encoding.offsets.extend([tokenizer_pb2.Offset(start=i, end=i + 1)] * len(ch.encode()))
        return response

    def Detokenize(self, request, context):
        self.script.enter("Detokenize", request, context)
        return tokenizer_pb2.DetokenizeResponse(
            texts=[bytes(s.ids).decode(errors="replace") for s in request.sequences]
        )

    def ApplyChatTemplate(self, request, context):
        self.script.enter("ApplyChatTemplate", request, context)
        text = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in request.messages)
        if request.add_generation_prompt:
            text += "<|im_start|>assistant\n"
        return tokenizer_pb2.ApplyChatTemplateResponse(text=text, ids=encode(text))

    def CountTokens(self, request, context):
        self.script.enter("CountTokens", request, context)
        counts = [len(encode(t)) for t in request.texts]
        return tokenizer_pb2.CountTokensResponse(counts=counts, total=sum(counts))


def verify_task(index: int, task: verifier_pb2.VerifyTask) -> verifier_pb2.VerifyResult:
    """Math: the last \\boxed{} against the references. Code: a test passes when its stdout is in the response."""
    result = verifier_pb2.VerifyResult(index=index, task_id=task.task_id, elapsed_s=0.001)
    if task.WhichOneof("kind") == "math":
        boxed = re.findall(r"\\boxed\{([^}]*)\}", task.response)
        if not boxed:
            result.verdict, result.reason = verifier_pb2.VERDICT_NO_ANSWER, "no \\boxed{} answer"
            return result
        result.extracted_answer = boxed[-1]
        is_correct = boxed[-1] in task.math.references
        result.reward = 1.0 if is_correct else 0.0
        result.verdict = verifier_pb2.VERDICT_CORRECT if is_correct else verifier_pb2.VERDICT_INCORRECT
        result.reason = "matches a reference" if is_correct else f"{boxed[-1]} matches no reference"
        return result
    for i, test in enumerate(task.code.tests):
        passed = test.expected_stdout in task.response
        status = verifier_pb2.TEST_STATUS_PASSED if passed else verifier_pb2.TEST_STATUS_WRONG_ANSWER
        result.tests.add(index=i, level=test.level or 1, status=status, elapsed_s=0.01)
    num_passed = sum(t.status == verifier_pb2.TEST_STATUS_PASSED for t in result.tests)
    result.reward = num_passed / max(1, len(result.tests))
    result.verdict = (
        verifier_pb2.VERDICT_CORRECT if result.reward == 1 else
        verifier_pb2.VERDICT_PARTIAL if num_passed else verifier_pb2.VERDICT_INCORRECT
    )  # fmt: skip
    result.reason = f"{num_passed}/{len(result.tests)} tests passed"
    return result


class FakeVerifier(verifier_pb2_grpc.VerifierServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def Verify(self, request, context):
        self.script.enter("Verify", request, context)
        return verifier_pb2.VerifyResponse(results=[verify_task(i, task) for i, task in enumerate(request.tasks)])


class FakeRollout(rollout_pb2_grpc.RolloutServicer):
    """Every prompt gets samples_per_prompt samples; odd samples answer wrongly."""

    def __init__(self, script: Script) -> None:
        self.script = script

    def Rollout(self, request, context):
        self.script.enter("Rollout", request, context)
        ids = {"rollout_id": request.rollout_id or "rollout-1", "weight_version": request.weight_version}
        num_samples = max(1, request.samples_per_prompt)
        for p, prompt in enumerate(request.prompts):
            rewards = []
            for s in range(num_samples):
                text = ANSWER if s % 2 == 0 else "The answer is \\boxed{5}."
                task = verifier_pb2.VerifyTask(response=text, math=prompt.math)
                verification = verify_task(0, task)
                rewards.append(verification.reward)
                sample = rollout_pb2.SampleFinished(
                    prompt_index=p, prompt_id=prompt.prompt_id, sample_index=s, text=text, token_ids=encode(text),
                    finish_reason=STOP, reward=verification.reward, verification=verification, generation_s=0.05,
                    reward_wait_s=0.001, usage=usage(10, len(encode(text))),
                )  # fmt: skip
                yield rollout_pb2.RolloutEvent(**ids, sample=sample)
                if "Rollout" in self.script.fail_after_first:
                    abort(context, self.script.fail_after_first["Rollout"])
            pass_rate = sum(r == 1.0 for r in rewards) / num_samples
            group = rollout_pb2.GroupFinished(
                prompt_index=p, prompt_id=prompt.prompt_id, num_samples=num_samples, pass_rate=pass_rate,
                mean_reward=sum(rewards) / num_samples, all_correct=pass_rate == 1.0, all_wrong=pass_rate == 0.0,
            )  # fmt: skip
            yield rollout_pb2.RolloutEvent(**ids, group=group)
        total = len(request.prompts) * num_samples
        finished = rollout_pb2.RolloutFinished(
            num_prompts_finished=len(request.prompts), num_samples_finished=total, wall_s=0.5, samples_per_s=total / 0.5,
        )  # fmt: skip
        yield rollout_pb2.RolloutEvent(**ids, finished=finished)


class FakeServer:
    """A threaded grpc server on 127.0.0.1 serving the fakes named in `services`."""

    ALL = ("inference", "tokenizer", "verifier", "rollout")

    def __init__(self, services: tuple[str, ...] = ALL, credentials: grpc.ServerCredentials | None = None) -> None:
        self.script = Script()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        adders = {
            "inference": (inference_pb2_grpc.add_InferenceServicer_to_server, FakeInference),
            "tokenizer": (tokenizer_pb2_grpc.add_TokenizerServicer_to_server, FakeTokenizer),
            "verifier": (verifier_pb2_grpc.add_VerifierServicer_to_server, FakeVerifier),
            "rollout": (rollout_pb2_grpc.add_RolloutServicer_to_server, FakeRollout),
        }
        for name in services:
            add, servicer = adders[name]
            add(servicer(self.script), self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.script.release.set()
        self.server.stop(grace=None)


def retry_info_trailer(delay_s: float) -> tuple[tuple[str, str | bytes], ...]:
    """The standard form, built with googleapis-common-protos and grpcio-status as a server would."""
    detail = any_pb2.Any()
    delay = duration_pb2.Duration(seconds=int(delay_s), nanos=int(delay_s % 1 * 1e9))
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="queue full", details=[detail])
    return tuple(rpc_status.to_status(status).trailing_metadata)
