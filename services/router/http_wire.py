"""The OpenAI HTTP API's edge, requests: OpenAI JSON bodies → frozen domain requests.

Every value is type-checked here (JSON has no schema of its own), then the same domain checks as the gRPC API run
(`wire.check_*`), so both front ends refuse the same things. Errors name the OpenAI parameter (`param`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.router import domain as d
from services.router import wire

# The domain's field names (what wire's checks and the pipeline raise) → OpenAI's parameter names.
PARAMS = {
    "sampling.max_new_tokens": "max_tokens",
    "sampling.constraint": "response_format",
    "sampling.json_schema": "response_format",
    "sampling.stop": "stop",
}
UNSUPPORTED = ("tools", "functions", "logit_bias", "audio", "prediction", "suffix", "web_search_options")
TOO_LONG = "input"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A parsed body: the domain request plus what only the HTTP response needs."""

    generation: d.GenerationRequest
    model: str
    include_usage: bool = False
    echo: bool = False  # completions: the prompt is prepended to each choice's text
    logprobs: bool = False  # chat: per-token logprobs in the response; completions: see top_logprobs


def param_of(error: d.InvalidRequest, chat: bool, body: Mapping[str, Any] | None = None) -> str:
    """The OpenAI parameter an InvalidRequest is about."""
    field = error.field
    if field == "request":  # a worker's refusal names its own protocol's field
        worker = {"json_schema": "response_format", "regex": "regex", "ebnf_grammar": "ebnf"}
        return next((v for k, v in worker.items() if f"sampling_params.{k}" in str(error)), "request")
    if field == "input" or field.startswith("messages") or field in ("text", "prompt"):
        return field if field.startswith("messages") else ("messages" if chat else "prompt")
    if field == "sampling.max_new_tokens" and body is not None and "max_completion_tokens" in body:
        return "max_completion_tokens"
    return PARAMS.get(field, field.removeprefix("sampling."))


def _bad(param: str, message: str) -> d.InvalidRequest:
    return d.InvalidRequest(param, message)


def _get(body: Mapping[str, Any], key: str, kinds: tuple[type, ...], what: str) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise _bad(key, f"must be {what}, got {json.dumps(value)[:60]}")
    return value


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = _get(body, key, (int, float), "a number")
    if value is not None and not math.isfinite(value):
        raise _bad(key, "must be a finite number")
    return None if value is None else float(value)


def _int(body: Mapping[str, Any], key: str) -> int | None:
    value = _get(body, key, (int, float), "an integer")
    if value is not None and (isinstance(value, float) and not value.is_integer()):
        raise _bad(key, "must be an integer")
    return None if value is None else int(value)


def _bool(body: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = _get(body, key, (bool,), "true or false")
    return default if value is None else value


def _str(body: Mapping[str, Any], key: str) -> str | None:
    return _get(body, key, (str,), "a string")  # type: ignore[no-any-return]


def _stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return tuple(value)
    raise _bad("stop", "must be a string or a list of strings")


def _constraint(body: Mapping[str, Any]) -> dict[str, str]:
    """response_format (json_object / json_schema) and the open servers' regex / ebnf extras."""
    out: dict[str, str] = {}
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
            raise _bad("response_format", 'must be an object with a "type"')
        kind = fmt["type"]
        if kind == "json_object":
            out["json_schema"] = json.dumps({"type": "object"})
        elif kind == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema", {}) if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise _bad("response_format.json_schema", 'must be an object with a "schema" object')
            out["json_schema"] = json.dumps(schema)
        elif kind != "text":
            raise _bad("response_format.type", f"must be text, json_object or json_schema, got {kind!r}")
    for key, name in (("regex", "regex"), ("ebnf", "ebnf")):
        value = _str(body, key)
        if value is not None:
            out[name] = value
    if len(out) > 1:
        raise _bad("response_format", "set at most one of response_format, regex, ebnf")
    return out


def sampling_of(body: Mapping[str, Any], max_tokens_keys: tuple[str, ...]) -> d.Sampling:
    max_tokens, max_key = None, "max_tokens"
    for key in max_tokens_keys:
        if max_tokens is None and body.get(key) is not None:
            max_tokens, max_key = _int(body, key), key
    seed = _int(body, "seed")
    if seed is not None and not 0 <= seed < 2**63:
        raise _bad("seed", "must be in [0, 2**63)")
    top_k = _int(body, "top_k")
    sampling = d.Sampling(
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        top_k=None if top_k in (None, 0) else top_k,  # 0 means off in some clients, as -1 does
        min_p=_number(body, "min_p"),
        repetition_penalty=_number(body, "repetition_penalty"),
        frequency_penalty=_number(body, "frequency_penalty") or 0.0,
        presence_penalty=_number(body, "presence_penalty") or 0.0,
        max_new_tokens=max_tokens,
        stop=_stop(body),
        stop_token_ids=_token_ids(body.get("stop_token_ids"), "stop_token_ids") if "stop_token_ids" in body else (),
        seed=seed,
        ignore_eos=_bool(body, "ignore_eos"),
        include_stop_str_in_output=_bool(body, "include_stop_str_in_output"),
        skip_special_tokens=_bool(body, "skip_special_tokens", True),
        **_constraint(body),
    )
    try:
        wire.check_sampling(sampling)
    except d.InvalidRequest as e:
        param = max_key if e.field == "sampling.max_new_tokens" else param_of(e, True)
        raise _bad(param, str(e).split(": ", 1)[-1]) from None
    return sampling


def _token_ids(value: Any, param: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise _bad(param, "must be a list of token ids (integers)")
    if any(t < 0 for t in value):
        raise _bad(param, "token ids must be >= 0")
    return tuple(value)


def _content(value: Any, param: str) -> str:
    """A message's content: a string, or a list of text parts ({"type": "text", "text": ...})."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(f"{param}[{i}]", 'only text parts are supported: {"type": "text", "text": "..."}')
            parts.append(part["text"])
        return "".join(parts)
    raise _bad(param, "must be a string or a list of text parts")


def messages_of(value: Any) -> tuple[d.Message, ...]:
    if not isinstance(value, list) or not value:
        raise _bad("messages", "must be a non-empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise _bad(f"messages[{i}]", 'must be an object with "role" and "content"')
        role = m.get("role")
        if not isinstance(role, str):
            raise _bad(f"messages[{i}].role", "must be a string")
        role = "system" if role == "developer" else role
        reasoning = m.get("reasoning_content")
        if reasoning is not None and not isinstance(reasoning, str):
            raise _bad(f"messages[{i}].reasoning_content", "must be a string")
        out.append(d.Message(role, _content(m.get("content"), f"messages[{i}].content"), reasoning))
    messages = tuple(out)
    wire.check_messages(messages)
    return messages


def _common(body: Any, chat: bool) -> tuple[str, int, bool, bool]:
    if not isinstance(body, dict):
        raise _bad("body", "must be a JSON object")
    for key in UNSUPPORTED:
        if body.get(key) not in (None, [], {}, ""):
            raise _bad(key, "is not supported by this server")
    model = _str(body, "model") or ""
    _str(body, "user")
    n = _int(body, "n")
    if n is not None and n < 1:
        raise _bad("n", "must be >= 1")
    best_of = _int(body, "best_of")
    if best_of is not None and best_of != (n or 1):
        raise _bad("best_of", "must equal n (no server-side best-of)")
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("stream_options", "must be an object")
    include_usage = _bool(options or {}, "include_usage")
    if options is not None and not stream:
        raise _bad("stream_options", "only allowed when stream is true")
    return model, n or 1, stream, include_usage


def chat_request(body: Any, request_id: str | None = None) -> HttpRequest:
    model, n, stream, include_usage = _common(body, True)
    messages = messages_of(body.get("messages"))
    logprobs = _bool(body, "logprobs")
    top = _int(body, "top_logprobs") or 0
    if top < 0:
        raise _bad("top_logprobs", "must be >= 0")
    if top and not logprobs:
        raise _bad("top_logprobs", "needs logprobs: true")
    split = _bool(body, "separate_reasoning", True)
    generation = _generation(
        body, d.Prompt(messages=messages), n, top, logprobs, stream, split, "http.chat", request_id
    )
    return HttpRequest(generation, model, include_usage, logprobs=logprobs)


def _prompt(value: Any) -> d.Prompt:
    """A text, a list of token ids, or a list holding exactly one of those."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, list)):
        value = value[0]
    if isinstance(value, str):
        try:
            wire.check_text(value, "prompt")
        except d.InvalidRequest as e:
            raise _bad("prompt", str(e).split(": ", 1)[-1]) from None
        return d.Prompt(text=value)
    if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return d.Prompt(token_ids=_token_ids(value, "prompt"))
    if isinstance(value, list) and len(value) > 1:
        raise _bad("prompt", "one prompt per request (send several requests, or use n for several samples)")
    raise _bad("prompt", "must be a non-empty string or a non-empty list of token ids")


def completion_request(body: Any, request_id: str | None = None) -> HttpRequest:
    model, n, stream, include_usage = _common(body, False)
    if "prompt" not in body:
        raise _bad("prompt", "is required")
    prompt = _prompt(body["prompt"])
    top = _int(body, "logprobs")
    if top is not None and top < 0:
        raise _bad("logprobs", "must be >= 0")
    echo = _bool(body, "echo")
    if echo and stream:
        raise _bad("echo", "is not supported with stream: true")
    generation = _generation(
        body, prompt, n, top or 0, top is not None, stream, False, "http.completions", request_id, completion=True
    )
    return HttpRequest(generation, model, include_usage, echo=echo, logprobs=top is not None)


def _generation(
    body: Mapping[str, Any],
    prompt: d.Prompt,
    n: int,
    top: int,
    logprobs: bool,
    stream: bool,
    split: bool,
    method: str,
    request_id: str | None,
    completion: bool = False,
) -> d.GenerationRequest:
    keys = ("max_tokens",) if completion else ("max_completion_tokens", "max_tokens")
    sampling = sampling_of(body, keys)
    try:
        n = wire.check_samples(n, top)
    except d.InvalidRequest as e:
        raise _bad(
            "logprobs" if completion and e.field == "top_logprobs" else e.field, str(e).split(": ", 1)[-1]
        ) from None
    extra = {}
    if request_id:
        try:
            wire.check_request_id(request_id, "x-request-id")
        except d.InvalidRequest as e:
            raise _bad("x-request-id", str(e).split(": ", 1)[-1]) from None
        extra["request_id"] = request_id
    return d.GenerationRequest(
        method=method + (".stream" if stream else ""),
        prompt=prompt,
        sampling=sampling,
        n=n,
        return_logprobs=logprobs,
        top_logprobs=top,
        split_reasoning=split,
        stream=stream,
        **extra,  # type: ignore[arg-type]
    )
