"""Weight updates of the torch engine: check a checkpoint against the served model, then copy it in place.

A checkpoint is a HF MiMo directory (config.json + model.safetensors, or shards named by
model.safetensors.index.json), MTP layer included. Everything is checked and read into host memory
before a single served tensor changes, so a refused checkpoint leaves the old weights serving.
Installing copies into the existing parameter tensors: their storage, and therefore the fused q|k|v and
gate|up matrices the runner holds views of and every captured CUDA graph, stay valid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from services.worker.engine_api import WeightsRejected
from services.worker.model.mimo import MiMoConfig, MiMoForCausalLM

if TYPE_CHECKING:
    from services.worker.engines.torch.core import EngineCore

ACCEPTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ARCH_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "num_nextn_predict_layers",
    "tie_word_embeddings",
)
MAX_NAMES = 6  # names listed in a refusal


def served_tensors(model: MiMoForCausalLM) -> dict[str, Tensor]:
    """The served model's tensors by HF name (the tied lm_head left out: it is the embedding)."""
    tensors = model.state_dict()
    if model.config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    return tensors


def read_checkpoint(model_dir: str | Path, model: MiMoForCausalLM) -> dict[str, Tensor]:
    """Every tensor the served model needs, read to host memory; WeightsRejected names what does not fit."""
    path = Path(model_dir)
    if not path.is_dir():
        raise WeightsRejected(f"model_path: {model_dir} is not a directory this worker can read")
    _check_config(path, model.config)
    expected = served_tensors(model)
    found = _read_files(path, _shard_files(path))
    if model.config.num_nextn_predict_layers == 0:  # as the loader: a plain model ignores MTP weights
        found = {k: v for k, v in found.items() if ".mtp_layers." not in k}
    if model.config.tie_word_embeddings:
        found.pop("lm_head.weight", None)
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        parts = [
            f"missing tensors {_names(missing)}" if missing else "",
            f"unexpected tensors {_names(extra)}" if extra else "",
        ]
        raise WeightsRejected(f"model_path: {model_dir}: " + "; ".join(p for p in parts if p))
    for name, served in expected.items():
        got = found[name]
        if tuple(got.shape) != tuple(served.shape):
            raise WeightsRejected(
                f"model_path: {model_dir}: tensor {name} has shape {list(got.shape)}, the served model {list(served.shape)}"
            )
        if got.dtype not in ACCEPTED_DTYPES:
            raise WeightsRejected(
                f"model_path: {model_dir}: tensor {name} has dtype {str(got.dtype).removeprefix('torch.')}; "
                "accepted: float32, bfloat16, float16"
            )
    return found


def install(model: MiMoForCausalLM, tensors: Mapping[str, Tensor]) -> None:
    """Copy the checked tensors into the served parameters (cast to their dtype and device), in place."""
    with torch.no_grad():
        for name, served in served_tensors(model).items():
            served.copy_(tensors[name])


def _names(names: list[str]) -> str:
    more = f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else ""
    return f"{names[:MAX_NAMES]}{more}"


def _check_config(path: Path, served: MiMoConfig) -> None:
    config = path / "config.json"
    if not config.is_file():
        raise WeightsRejected(f"model_path: {path} has no config.json")
    try:
        cfg = MiMoConfig.from_dict(json.loads(config.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsRejected(f"model_path: {path}/config.json is unreadable: {e}") from e
    diffs = [
        f"{f} {getattr(cfg, f)} (served {getattr(served, f)})"
        for f in ARCH_FIELDS
        if getattr(cfg, f) != getattr(served, f)
    ]
    if diffs:
        raise WeightsRejected(f"model_path: {path}/config.json is another architecture: {', '.join(diffs)}")


def _shard_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as e:
            raise WeightsRejected(f"model_path: {index} is unreadable: {e}") from e
    else:
        names = ["model.safetensors"]
    files = [path / n for n in names]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise WeightsRejected(f"model_path: {path} lacks {absent}")
    return files


def _read_files(path: Path, files: list[Path]) -> dict[str, Tensor]:
    tensors: dict[str, Tensor] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    if name in tensors:
                        raise WeightsRejected(f"model_path: {path}: tensor {name} appears in two shards")
                    tensors[name] = f.get_tensor(name)
        except SafetensorError as e:
            raise WeightsRejected(f"model_path: {file} is truncated or not a safetensors file ({e})") from e
        except OSError as e:
            raise WeightsRejected(f"model_path: {file} cannot be read ({e})") from e
    return tensors


def install_when_idle(core: EngineCore, tensors: Mapping[str, Tensor], done: Future[None]) -> None:
    """On the engine thread, between steps: install unless a request is running; settle `done` either way."""
    if core.has_work:
        done.set_exception(WeightsRejected("requests are in flight; pause generation before updating weights"))
        return
    try:
        install(core.runner.model, tensors)
    except Exception as e:  # a copy that fails half way (device out of memory) leaves mixed weights: say so
        done.set_exception(WeightsRejected(f"installing the weights failed part way, reload them: {e!r}"))
        return
    done.set_result(None)
