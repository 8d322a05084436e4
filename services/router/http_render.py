"""The OpenAI HTTP API's edge, responses: domain results → OpenAI JSON (bodies and SSE chunks), and domain errors →
OpenAI's error body with its HTTP status."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.router import domain as d
from services.router.pipeline import ModelCard

FINISH = {
    d.FinishReason.STOP: "stop",
    d.FinishReason.LENGTH: "length",
    d.FinishReason.ABORT: "abort",
    d.FinishReason.ERROR: "error",
}

Decode = Callable[[int], str]  # one token id → its text


@dataclass(frozen=True, slots=True)
class HttpError:
    status: int
    body: dict[str, Any]
    retry_after_s: float | None = None


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def http_error(error: Exception, param: str | None = None) -> HttpError:
    """The one map from domain errors to HTTP statuses and OpenAI error types."""
    message = str(error)
    if isinstance(error, d.InvalidRequest):
        return HttpError(400, error_body(message, "invalid_request_error", param or error.field, "invalid_value"))
    if isinstance(error, d.Unauthenticated):
        return HttpError(401, error_body(message, "authentication_error", None, "invalid_api_key"))
    if isinstance(error, d.UnknownModel):
        return HttpError(404, error_body(message, "invalid_request_error", "model", "model_not_found"))
    if isinstance(error, d.Rejected):
        body = error_body(f"{message}; retry after {error.retry_after_s:g} s", "rate_limit_error", None, error.reason)
        return HttpError(429, body, error.retry_after_s)
    if isinstance(error, d.Unavailable):
        return HttpError(503, error_body(message, "service_unavailable", None, "no_worker"))
    if isinstance(error, d.DeadlineExceeded):
        return HttpError(504, error_body(message, "timeout", None, "deadline_exceeded"))
    return HttpError(500, error_body(f"internal error: {type(error).__name__}", "server_error", None, None))


def usage_json(u: d.Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }


def models_json(card: ModelCard, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_json(card, created)]}


def model_json(card: ModelCard, created: int) -> dict[str, Any]:
    return {
        "id": card.id,
        "object": "model",
        "created": created,
        "owned_by": "mimo-serve",
        "max_model_len": card.max_context_tokens,
    }


# --- logprobs ---------------------------------------------------------------------------------------------------
def _token(decode: Decode, token_id: int, logprob: float) -> dict[str, Any]:
    text = decode(token_id)
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def chat_logprobs(lps: Sequence[d.TokenLogprob], decode: Decode) -> dict[str, Any]:
    return {
        "content": [
            {**_token(decode, lp.token_id, lp.logprob), "top_logprobs": [_token(decode, t, v) for t, v in lp.top]}
            for lp in lps
        ]
    }


def completion_logprobs(lps: Sequence[d.TokenLogprob], decode: Decode, offset: int = 0) -> dict[str, Any]:
    tokens = [decode(lp.token_id) for lp in lps]
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t)
    return {
        "tokens": tokens,
        "token_logprobs": [lp.logprob for lp in lps],
        "top_logprobs": [{decode(t): v for t, v in lp.top} for lp in lps],
        "text_offset": offsets,
    }


# --- whole responses ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Head:
    """What every response and chunk of one request shares."""

    id: str
    model: str
    created: int

    @staticmethod
    def of(prefix: str, request_id: str, model: str) -> Head:
        return Head(f"{prefix}-{request_id}", model, int(time.time()))


def chat_response(
    head: Head, choices: Sequence[d.Choice], usage: d.Usage, logprobs: bool, decode: Decode
) -> dict[str, Any]:
    return {
        "id": head.id,
        "object": "chat.completion",
        "created": head.created,
        "model": head.model,
        "choices": [
            {
                "index": c.index,
                "message": {"role": "assistant", "content": c.text, "reasoning_content": c.reasoning or None},
                "logprobs": chat_logprobs(c.logprobs, decode) if logprobs else None,
                "finish_reason": FINISH.get(c.finish_reason, "stop"),
                "matched_stop": c.matched_stop,
            }
            for c in choices
        ],
        "usage": usage_json(usage),
    }


def completion_response(
    head: Head, choices: Sequence[d.Choice], usage: d.Usage, logprobs: bool, decode: Decode, echo: str | None
) -> dict[str, Any]:
    prefix = echo or ""
    return {
        "id": head.id,
        "object": "text_completion",
        "created": head.created,
        "model": head.model,
        "choices": [
            {
                "index": c.index,
                "text": prefix + c.text,
                "logprobs": completion_logprobs(c.logprobs, decode, len(prefix)) if logprobs else None,
                "finish_reason": FINISH.get(c.finish_reason, "stop"),
                "matched_stop": c.matched_stop,
            }
            for c in choices
        ],
        "usage": usage_json(usage),
    }


# --- stream chunks ------------------------------------------------------------------------------------------------
def chat_chunk(head: Head, choices: list[dict[str, Any]], usage: bool) -> dict[str, Any]:
    out = {"id": head.id, "object": "chat.completion.chunk", "created": head.created, "model": head.model}
    out["choices"] = choices  # type: ignore[assignment]
    if usage:
        out["usage"] = None
    return out


def chat_role_choice(index: int) -> dict[str, Any]:
    return {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}


def chat_delta_choice(delta: d.Delta, logprobs: bool, decode: Decode) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if delta.text:
        body["content"] = delta.text
    if delta.reasoning:
        body["reasoning_content"] = delta.reasoning
    finish = FINISH.get(delta.finish_reason)
    return {
        "index": delta.index,
        "delta": body,
        "logprobs": chat_logprobs(delta.logprobs, decode) if logprobs and delta.logprobs else None,
        "finish_reason": finish,
        **({"matched_stop": delta.matched_stop} if finish else {}),
    }


def completion_chunk(head: Head, choices: list[dict[str, Any]], usage: bool) -> dict[str, Any]:
    out = {"id": head.id, "object": "text_completion", "created": head.created, "model": head.model}
    out["choices"] = choices  # type: ignore[assignment]
    if usage:
        out["usage"] = None
    return out


def completion_delta_choice(delta: d.Delta, logprobs: bool, decode: Decode) -> dict[str, Any]:
    finish = FINISH.get(delta.finish_reason)
    return {
        "index": delta.index,
        "text": delta.text,
        "logprobs": completion_logprobs(delta.logprobs, decode) if logprobs and delta.logprobs else None,
        "finish_reason": finish,
        **({"matched_stop": delta.matched_stop} if finish else {}),
    }


def is_empty(delta: d.Delta) -> bool:
    return not (delta.text or delta.reasoning or delta.logprobs or delta.finish_reason in FINISH)
