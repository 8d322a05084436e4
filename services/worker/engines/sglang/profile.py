"""The SGLang launch profile and the exact server command it produces (gRPC mode, MiMo MTP flags)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

# MiMo's one MTP layer as SGLang's EAGLE drafter: one draft step, one branch, two tokens verified per pass
# (XiaomiMiMo/MiMo README; sglang PR #6059). No --speculative-draft-model-path: the checkpoint carries it.
MIMO_MTP_ARGS = (
    "--speculative-algorithm",
    "EAGLE",
    "--speculative-num-steps",
    "1",
    "--speculative-eagle-topk",
    "1",
    "--speculative-num-draft-tokens",
    "2",
)
GRPC_MODE_FLAGS = ("--grpc-mode", "--smg-grpc-mode")  # the second is the newest name (the first stays an alias)
MANAGED_FLAGS = frozenset({"--model-path", "--host", "--port", *GRPC_MODE_FLAGS})


@dataclass(frozen=True, slots=True)
class SglangProfile:
    """What a production worker runs: model, parallelism, memory, context, MTP, and pass-through arguments."""

    model_path: str
    served_model_name: str | None = None
    tp_size: int = 1
    mem_fraction_static: float | None = None  # None: SGLang's own default
    context_length: int | None = None
    max_running_requests: int | None = None
    is_mtp_enabled: bool = True
    is_metrics_enabled: bool = True
    grpc_mode_flag: str = "--grpc-mode"
    extra_args: tuple[str, ...] = ()
    python: str | None = None  # interpreter with sglang installed; None: this one
    startup_timeout_s: float = 1800.0  # weights download/load and CUDA graph capture can take minutes
    stop_timeout_s: float = 30.0  # SIGTERM to SIGKILL
    # SGLang's HTTP admin API (update_weights_from_disk with weight_version), e.g. "http://127.0.0.1:30010";
    # None: weight updates are refused (SGLang's --grpc-mode protocol has no weight-update RPC; docs/workers.md)
    admin_url: str | None = None

    def __post_init__(self) -> None:
        if not Path(self.model_path).is_absolute():
            raise ValueError(f"model_path must be absolute, got {self.model_path!r}")
        if self.tp_size < 1:
            raise ValueError("tp_size must be >= 1")
        if self.mem_fraction_static is not None and not 0 < self.mem_fraction_static < 1:
            raise ValueError("mem_fraction_static must be in (0, 1)")
        if self.grpc_mode_flag not in GRPC_MODE_FLAGS:
            raise ValueError(f"grpc_mode_flag must be one of {GRPC_MODE_FLAGS}")
        clash = sorted({a.split("=", 1)[0] for a in self.extra_args} & MANAGED_FLAGS)
        if clash:
            raise ValueError(f"extra_args may not set {clash}: the launcher owns them")

    def with_overrides(self, **changes: Any) -> SglangProfile:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def build_command(profile: SglangProfile, host: str, port: int) -> list[str]:
    """The SGLang server command for `profile`, serving SGLang's scheduler gRPC protocol on host:port."""
    cmd = [profile.python or sys.executable, "-m", "sglang.launch_server"]
    cmd += ["--model-path", profile.model_path, "--host", host, "--port", str(port), profile.grpc_mode_flag]
    cmd += ["--trust-remote-code", "--tp-size", str(profile.tp_size)]
    if profile.mem_fraction_static is not None:
        cmd += ["--mem-fraction-static", str(profile.mem_fraction_static)]
    if profile.context_length is not None:
        cmd += ["--context-length", str(profile.context_length)]
    if profile.served_model_name:
        cmd += ["--served-model-name", profile.served_model_name]
    if profile.max_running_requests is not None:
        cmd += ["--max-running-requests", str(profile.max_running_requests)]
    if profile.is_metrics_enabled:
        cmd.append("--enable-metrics")
    if profile.is_mtp_enabled:
        cmd += MIMO_MTP_ARGS
    return [*cmd, *profile.extra_args]


def load_sglang_profile(path: str | Path | None, **overrides: Any) -> SglangProfile:
    """A profile from JSON (SglangProfile's fields; `_comment*` ignored), with non-None overrides applied."""
    data: dict[str, Any] = json.loads(Path(path).read_text()) if path else {}
    known = {f.name for f in fields(SglangProfile)}
    unknown = [k for k in data if k not in known and not k.startswith("_")]
    if unknown:
        raise ValueError(f"{path}: unknown sglang profile keys {unknown}")
    values = {k: v for k, v in data.items() if k in known}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "model_path" not in values:
        raise ValueError("the sglang engine needs a model: --model DIR or model_path in --profile")
    values["model_path"] = (
        str(Path(values["model_path"]).resolve()) if Path(values["model_path"]).exists() else values["model_path"]
    )
    values["extra_args"] = tuple(values.get("extra_args", ()))
    return SglangProfile(**values)
