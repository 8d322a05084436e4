"""The simulator's latency model, loaded from a JSON profile (see docs/workers.md for each field)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

PROFILE_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = PROFILE_DIR / "mimo-7b-rl-h200.json"


@dataclass(frozen=True, slots=True)
class OutputLength:
    """Where a sample's natural length comes from: the request's max_new_tokens, or a seeded lognormal."""

    kind: Literal["request", "lognormal"] = "request"
    median_tokens: float = 256.0
    sigma: float = 0.8


@dataclass(frozen=True, slots=True)
class SimProfile:
    """Costs in seconds, capacities in tokens and requests. ITL = (decode_base_s + slope * batch) * MTP factor."""

    name: str = "custom"
    prefill_base_s: float = 0.01
    prefill_per_token_s: float = 5e-5
    decode_base_s: float = 0.0127
    decode_per_request_s: float = 2e-4
    is_mtp_enabled: bool = True
    mtp_accept_rate: float = 0.76  # P(the one draft token is accepted): tokens per step = 1 + rate
    mtp_step_cost_factor: float = 1.35  # an MTP step (draft + 2-token verify) over a plain decode step
    kv_capacity_tokens: int = 540_000
    page_size_tokens: int = 16
    max_running_requests: int = 256
    max_waiting_requests: int = 4096
    max_prefill_tokens: int = 16_384  # prompt tokens one prefill batch may take
    reserve_output_ratio: float = 1.0  # share of a request's remaining max_new_tokens reserved at admission
    weight_load_s: float = 8.0  # a weight update: read and install a checkpoint (assumed: 15.7 GB at ~2 GB/s)
    output_length: OutputLength = field(default_factory=OutputLength)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks = {
            "mtp_accept_rate": 0 <= self.mtp_accept_rate <= 1,
            "kv_capacity_tokens": self.kv_capacity_tokens > 0,
            "page_size_tokens": self.page_size_tokens >= 1,
            "max_running_requests": self.max_running_requests >= 1,
            "max_waiting_requests": self.max_waiting_requests >= 0,
            "max_prefill_tokens": self.max_prefill_tokens >= 1,
            "reserve_output_ratio": 0 <= self.reserve_output_ratio <= 1,
            "weight_load_s": self.weight_load_s >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"sim profile {self.name}: invalid {', '.join(bad)}")

    @property
    def tokens_per_step(self) -> float:
        return 1 + self.mtp_accept_rate if self.is_mtp_enabled else 1.0

    def decode_step_s(self, batch: int) -> float:
        step = self.decode_base_s + self.decode_per_request_s * batch
        return step * self.mtp_step_cost_factor if self.is_mtp_enabled else step

    def prefill_s(self, uncached_tokens: int) -> float:
        return self.prefill_base_s + self.prefill_per_token_s * uncached_tokens

    def with_overrides(self, **changes: Any) -> SimProfile:
        """A copy with the non-None changes applied."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_profile(path: str | Path | None = None) -> SimProfile:
    """Read a profile JSON (keys are SimProfile's fields; `output_length` an object; `_comment*` ignored)."""
    data = json.loads(Path(path or DEFAULT_PROFILE).read_text())
    known = {f.name for f in fields(SimProfile)}
    unknown = [k for k in data if k not in known and not k.startswith("_")]
    if unknown:
        raise ValueError(f"{path}: unknown profile keys {unknown}")
    values = {k: v for k, v in data.items() if k in known}
    if "output_length" in values:
        values["output_length"] = OutputLength(**values["output_length"])
    if "notes" in values:
        values["notes"] = tuple(values["notes"])
    return SimProfile(**values)
