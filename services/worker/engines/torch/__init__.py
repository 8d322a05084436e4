"""The reference engine: MiMo in PyTorch (nano-vllm's split), with paged KV, prefix cache and MTP.

`mimo-serve worker --engine torch --model DIR` calls `build(args)`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from services.worker.engines.torch.engine import TorchEngine, TorchEngineConfig

__all__ = ["TorchEngine", "TorchEngineConfig", "build", "config_from_args"]


def config_from_args(args: argparse.Namespace) -> TorchEngineConfig:
    """The engine settings from the worker's flags (absent flags keep the defaults)."""
    defaults = TorchEngineConfig(model_dir="")
    device = getattr(args, "device", None) or defaults.device
    return TorchEngineConfig(
        model_dir=args.model,
        device=device,
        dtype=getattr(args, "dtype", None) or defaults.dtype,
        is_mtp_enabled=not getattr(args, "no_mtp", False),
        max_running_requests=getattr(args, "max_running_requests", None) or defaults.max_running_requests,
        kv_cache_tokens=getattr(args, "kv_cache_tokens", None),
        max_batch_tokens=getattr(args, "max_batch_tokens", None) or defaults.max_batch_tokens,
        block_size=getattr(args, "block_size", None) or defaults.block_size,
        use_cuda_graphs=not getattr(args, "no_cuda_graphs", False),
        compile_kernels=not getattr(args, "no_compile", False),
        served_model_name=getattr(args, "served_model_name", None),
        weight_version=getattr(args, "weight_version", None) or defaults.weight_version,
    )


def build(args: argparse.Namespace) -> TorchEngine:
    """A TorchEngine from `mimo-serve worker` flags; the model loads in `start()`."""
    if not getattr(args, "model", None):
        raise ValueError("--model: the torch engine needs a model directory (config.json + safetensors)")
    if not (Path(args.model) / "config.json").is_file():
        raise FileNotFoundError(f"--model: {args.model} has no config.json (is the model trained/downloaded?)")
    return TorchEngine(config_from_args(args))
