"""API keys (grpc-free; the gRPC interceptor is in interceptors.py): several named bearer tokens, compared in constant time, with optional per-key request and token rate
limits (the `limits` library's moving window) and usage metrics per key. Health checks stay open.

A keys file (a Kubernetes Secret mounted as a file) is YAML or JSON:

    keys:
      - {name: trainer, token: "…", requests_per_minute: 600, tokens_per_minute: 2000000}
      - {name: eval, token: "…"}
"""

from __future__ import annotations

import contextvars
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from limits import RateLimitItemPerMinute, storage, strategies
from prometheus_client import Counter

AUTH_REQUESTS = Counter("mimo_auth_requests_total", "Calls by API key and outcome", ["key", "outcome"])
AUTH_TOKENS = Counter("mimo_auth_tokens_total", "Prompt + completion tokens served, by API key", ["key"])

# The key of the call being served and its ring (set around each authenticated handler), so the pipeline can
# charge the tokens it served to it, whatever front end the call came in through.
CURRENT_KEY: contextvars.ContextVar[tuple[ApiKey, KeyRing] | None] = contextvars.ContextVar(
    "mimo_api_key", default=None
)


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    token: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


class KeysError(ValueError):
    """A keys file that cannot be used; the message names the file and the entry."""


def load_keys(path: Path) -> list[ApiKey]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise KeysError(f"--auth-keys-file: cannot read {path}: {e}") from e
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise KeysError(f"--auth-keys-file: {path} has no `keys:` list")
    keys = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("token"):
            raise KeysError(f"--auth-keys-file: {path}: keys[{i}] needs a name and a token")
        rpm, tpm = entry.get("requests_per_minute"), entry.get("tokens_per_minute")
        keys.append(ApiKey(str(entry["name"]), str(entry["token"]), rpm and int(rpm), tpm and int(tpm)))
    if len({k.name for k in keys}) < len(keys):
        raise KeysError(f"--auth-keys-file: {path}: key names must be unique")
    return keys


class Limited(Exception):
    """A key is over one of its limits; `retry_after_s` is when the window frees up."""

    def __init__(self, key: ApiKey, what: str, retry_after_s: float) -> None:
        super().__init__(f"API key {key.name!r} is over its {what} limit")
        self.key, self.retry_after_s = key, retry_after_s


class KeyRing:
    """Authenticates `Authorization: Bearer …` values and enforces each key's limits."""

    def __init__(self, keys: Sequence[ApiKey]) -> None:
        self.keys = tuple(keys)
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        """The key whose token matches; every key is compared (constant time), so timing tells nothing."""
        offered = (authorization or "").encode()
        found = None
        for key in self.keys:
            if hmac.compare_digest(offered, f"Bearer {key.token}".encode()):
                found = key
        return found

    def _retry_after(self, limit: RateLimitItemPerMinute, key: ApiKey, what: str) -> float:
        stats = self._limiter.get_window_stats(limit, what, key.name)
        return max(0.05, stats.reset_time - time.time())

    def admit(self, key: ApiKey) -> None:
        """Count one call against the key's request limit; Limited if the key is over a limit."""
        if key.tokens_per_minute:
            tokens = RateLimitItemPerMinute(key.tokens_per_minute)
            if not self._limiter.test(tokens, "tokens", key.name):
                raise Limited(key, "tokens per minute", self._retry_after(tokens, key, "tokens"))
        if key.requests_per_minute:
            requests = RateLimitItemPerMinute(key.requests_per_minute)
            if not self._limiter.hit(requests, "requests", key.name):
                raise Limited(key, "requests per minute", self._retry_after(requests, key, "requests"))

    def charge_tokens(self, key: ApiKey, num_tokens: int) -> None:
        AUTH_TOKENS.labels(key.name).inc(num_tokens)
        if key.tokens_per_minute and num_tokens > 0:
            # a call that overshoots fills the window; later calls wait for it to move on
            limit = RateLimitItemPerMinute(key.tokens_per_minute)
            cost = min(num_tokens, key.tokens_per_minute)
            if not self._limiter.hit(limit, "tokens", key.name, cost=cost):
                remaining = self._limiter.get_window_stats(limit, "tokens", key.name).remaining
                if remaining > 0:
                    self._limiter.hit(limit, "tokens", key.name, cost=remaining)


def charge_current(num_tokens: int) -> None:
    """Charge tokens to the key of the call being served (no-op without auth)."""
    if (current := CURRENT_KEY.get()) is not None:
        key, ring = current
        ring.charge_tokens(key, num_tokens)
