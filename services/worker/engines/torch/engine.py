"""`TorchEngine`: the `Engine` protocol over `EngineCore`, whose step loop runs in a dedicated thread.

The event loop only queues commands and reads published chunks; every torch call happens on the
engine thread, so streaming, health checks and metrics stay responsive while the model runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gc
import logging
import queue
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from services.worker.engine_api import (
    EngineFull,
    EngineLoad,
    EngineModelInfo,
    EngineUnavailable,
    GenerateInput,
    Health,
    InvalidRequest,
    OutputChunk,
    validate_common,
)
from services.worker.engines.torch.core import CoreConfig, EngineCore, RequestOutput
from services.worker.engines.torch.weights import install_when_idle, read_checkpoint
from services.worker.kv_events import KvEventLog
from services.worker.model import MiMoForCausalLM, load_mimo
from services.worker.model_info import read_model_info

log = logging.getLogger(__name__)

DEFAULT_CPU_KV_TOKENS = 32768
IDLE_REFRESH_S = 1.0
SMALL_MODEL_HIDDEN = 1024


@dataclass(frozen=True, slots=True)
class TorchEngineConfig:
    model_dir: str
    device: str = "cpu"
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on CPU
    is_mtp_enabled: bool = True
    max_running_requests: int = 64
    kv_cache_tokens: int | None = None  # None: 32768 on CPU, half the free memory on CUDA
    max_batch_tokens: int = 8192
    block_size: int = 16
    max_waiting_requests: int = 4096
    use_cuda_graphs: bool = True
    compile_kernels: bool = True  # CUDA: torch.compile the layers' elementwise pieces (some seconds at start)
    served_model_name: str | None = None
    gpu_kv_memory_fraction: float = 0.5
    cpu_threads: int | None = None  # torch threads on CPU; None: 1 for small models (hidden <= 1024), else torch's
    weight_version: str = "default"  # reported until the first weight update (SGLang's default label)

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[self.dtype]  # fmt: skip


def kv_bytes_per_token(model: MiMoForCausalLM) -> int:
    cfg = model.config
    layers = cfg.num_hidden_layers + min(1, cfg.num_nextn_predict_layers)
    return 2 * layers * cfg.num_key_value_heads * cfg.head_dim * model.lm_head.weight.element_size()


def build_core(model: MiMoForCausalLM, cfg: TorchEngineConfig, info: EngineModelInfo, tokenizer: Any) -> EngineCore:
    """Size the KV cache and the context, and build the synchronous core."""
    tokens = cfg.kv_cache_tokens
    if tokens is None and model.lm_head.weight.device.type == "cuda":
        free_bytes, _ = torch.cuda.mem_get_info(model.lm_head.weight.device)
        tokens = int(free_bytes * cfg.gpu_kv_memory_fraction) // kv_bytes_per_token(model)
    num_blocks = max(2, -(-(tokens or DEFAULT_CPU_KV_TOKENS) // cfg.block_size))
    lookahead = int(cfg.is_mtp_enabled and model.config.num_nextn_predict_layers > 0)
    max_context = min(
        info.max_context_length, model.config.max_position_embeddings, num_blocks * cfg.block_size - lookahead
    )
    core_cfg = CoreConfig(
        num_blocks=num_blocks,
        block_size=cfg.block_size,
        max_running_requests=cfg.max_running_requests,
        max_batch_tokens=cfg.max_batch_tokens,
        is_mtp_enabled=cfg.is_mtp_enabled,
        use_cuda_graphs=cfg.use_cuda_graphs,
        compile_kernels=cfg.compile_kernels,
        max_context_length=max_context,
        eos_token_ids=info.eos_token_ids,
    )
    return EngineCore(model, core_cfg, tokenizer)


def freeze_start_up_objects() -> None:
    """Take what start-up left alive (the model's modules, the graphs, the compiled kernels' caches) out of the
    cyclic collector's reach, as vLLM does after its graph capture: a full collection mid-stream then walks
    only what serving allocated since. Beside an 8K prompt on the H200 (bench/ENGINE_NOTES.md, fifth
    session) the streams' ITL p99 read 31.9, 24.6 and 24.4 ms with it, 27.6, 28.9 and 29.0 without (one
    run, alternated): suggestive, not settled."""
    gc.collect()
    gc.freeze()


def set_cpu_threads(threads: int | None, hidden_size: int) -> None:
    """Small matmuls run fastest on one thread, and far faster on a shared, busy machine (no spinning barriers)."""
    if threads is None and hidden_size <= SMALL_MODEL_HIDDEN:
        threads = 1
    if threads:
        torch.set_num_threads(threads)


def provisional_info(cfg: TorchEngineConfig) -> EngineModelInfo | None:
    """What the directory says before the model loads (requests get UNAVAILABLE until then, not a crash)."""
    try:
        return dataclasses.replace(read_model_info(cfg.model_dir, cfg.served_model_name), engine="torch")
    except (FileNotFoundError, ValueError):
        return None


class TorchEngine:
    """The reference engine: MiMo in PyTorch with paged KV, prefix cache, and MTP speculative decoding."""

    def __init__(self, cfg: TorchEngineConfig, model: MiMoForCausalLM | None = None) -> None:
        self.cfg = cfg
        self._model = model  # preloaded (tests); otherwise loaded from cfg.model_dir in start()
        self._core: EngineCore | None = None
        self._info: EngineModelInfo | None = provisional_info(cfg)  # exact once the model and KV are sized
        self._tokenizer: Any = None
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: dict[str, asyncio.Queue[OutputChunk | Exception]] = {}
        self._load = EngineLoad(max_running_requests=cfg.max_running_requests)
        self._error: str | None = None
        self._is_stopping = False
        self.kv_event_log = KvEventLog(cfg.block_size)  # SubscribeKvEvents: the prefix cache's blocks

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._build)
        self._thread = threading.Thread(target=self._run, name="torch-engine", daemon=True)
        self._thread.start()

    def _build(self) -> None:
        model_dir = Path(self.cfg.model_dir)
        model = self._model or load_mimo(model_dir, self.cfg.device, self.cfg.torch_dtype)
        if model.lm_head.weight.device.type == "cpu":
            set_cpu_threads(self.cfg.cpu_threads, model.config.hidden_size)
        info = read_model_info(model_dir, self.cfg.served_model_name)
        if (model_dir / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._core = core = build_core(model, self.cfg, info, self._tokenizer)
        freeze_start_up_objects()
        core.blocks.events = self.kv_event_log
        self._info = dataclasses.replace(
            info,
            max_context_length=core.cfg.max_context_length,
            vocab_size=model.config.vocab_size,
            engine="torch",
            engine_version=torch.__version__,
            weight_version=self.cfg.weight_version,
        )
        self._load = core.load()
        log.info(
            "torch engine ready",
            extra={"kv_tokens": core.capacity_tokens, "mtp": core.is_mtp, "device": str(core.runner.device)},
        )

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._is_stopping = True
        self._submit("stop", None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # ---- Engine protocol ---------------------------------------------------------------------

    def model_info(self) -> EngineModelInfo:
        if self._info is None:
            raise EngineUnavailable(f"no model information in {self.cfg.model_dir}")
        return self._info

    def validate(self, req: GenerateInput) -> None:
        info = self.model_info()
        validate_common(req, info)
        if req.sampling.stop and self._tokenizer is None:
            raise InvalidRequest("sampling_params.stop", "stop strings need the model's tokenizer.json")
        if req.sampling.n > self.cfg.max_running_requests:
            raise InvalidRequest("sampling_params.n", f"at most {self.cfg.max_running_requests} samples per request")
        if req.top_logprobs_num > info.vocab_size:
            raise InvalidRequest("top_logprobs_num", f"at most the vocabulary size {info.vocab_size}")

    async def generate(self, req: GenerateInput) -> AsyncIterator[OutputChunk]:
        self.validate(req)
        if self._thread is None or self._is_stopping:
            raise EngineUnavailable("the torch engine is not running (still loading its model, or stopping)")
        if req.request_id in self._streams:
            raise InvalidRequest("request_id", f"{req.request_id!r} is already in flight")
        if len(self._streams) >= self.cfg.max_running_requests + self.cfg.max_waiting_requests:
            raise EngineFull(f"{len(self._streams)} requests in flight")
        stream: asyncio.Queue[OutputChunk | Exception] = asyncio.Queue()
        self._streams[req.request_id] = stream
        self._submit("add", req)
        remaining = req.sampling.n
        try:
            while remaining:
                item = await stream.get()
                if isinstance(item, Exception):
                    remaining = 0
                    raise item
                remaining -= item.finished
                yield item
        finally:
            self._streams.pop(req.request_id, None)
            if remaining:  # the caller went away early: free the request's KV
                self._submit("abort", req.request_id)

    async def abort(self, request_id: str) -> bool:
        if request_id not in self._streams:
            return False
        self._submit("abort", request_id)
        return True

    def load(self) -> EngineLoad:
        return self._load

    async def update_weights(self, model_path: str, weight_version: str) -> None:
        """Check and read the checkpoint off the engine thread, then copy it in between two steps."""
        core, info = self._core, self._info
        if core is None or info is None or self._thread is None:
            raise EngineUnavailable("the torch engine is not running (still loading its model, or stopping)")
        tensors = await asyncio.to_thread(read_checkpoint, model_path, core.runner.model)
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._submit("weights", (tensors, done))
        await asyncio.wrap_future(done)
        self._info = dataclasses.replace(info, weight_version=weight_version)

    async def flush_cache(self) -> bool:
        done: concurrent.futures.Future[bool] = concurrent.futures.Future()
        self._submit("flush", done)
        return await asyncio.wrap_future(done)

    async def health(self) -> Health:
        if self._thread is None or not self._thread.is_alive():
            return Health(False, "the torch engine is not running")
        return Health(self._error is None, self._error or "ok")

    def server_args(self) -> Mapping[str, str | int | float | bool]:
        core = self._core
        return {
            "engine": "torch",
            "device": self.cfg.device,
            "dtype": str(self.cfg.torch_dtype).removeprefix("torch."),
            "speculative_algorithm": "MTP" if core is not None and core.is_mtp else "",
            "speculative_num_draft_tokens": 2 if core is not None and core.is_mtp else 0,
            "max_running_requests": self.cfg.max_running_requests,
            "max_total_num_tokens": core.capacity_tokens if core else 0,
            "page_size": self.cfg.block_size,
            "chunked_prefill_size": self.cfg.max_batch_tokens,
            "context_length": self._info.max_context_length if self._info else 0,
            "cuda_graph": bool(core and core.runner.graphs is not None),
        }

    # ---- engine thread -----------------------------------------------------------------------

    def _submit(self, command: str, payload: Any) -> None:
        self._inbox.put((command, payload))
        self._wake.set()

    def _run(self) -> None:
        core = self._core
        assert core is not None
        while True:
            outputs, should_stop = self._drain_inbox(core)
            if should_stop:
                self._publish([out for s in list(core.scheduler.waiting) + list(core.scheduler.running)
                               for out in core.abort_request(s.request_id)])  # fmt: skip
                return
            if core.has_work:
                try:
                    outputs += core.step()
                except Exception as e:  # a bug must not hang every stream: fail them and keep serving
                    log.exception("engine step failed")
                    self._error = f"step failed: {e!r}"
                    self._fail_all(core, e)
            self._load = core.load()
            self._publish(outputs)
            if not core.has_work:
                self._wake.wait(IDLE_REFRESH_S)
                self._wake.clear()

    def _drain_inbox(self, core: EngineCore) -> tuple[list[RequestOutput], bool]:
        outputs: list[RequestOutput] = []
        while True:
            try:
                command, payload = self._inbox.get_nowait()
            except queue.Empty:
                return outputs, False
            if command == "add":
                try:
                    outputs += core.add_request(payload)
                except InvalidRequest as e:  # a constraint that does not compile: refuse that request alone
                    if self._loop is not None:
                        self._loop.call_soon_threadsafe(self._deliver_error, {payload.request_id}, e)
            elif command == "abort":
                outputs += core.abort_request(payload)
            elif command == "flush":
                payload.set_result(core.flush_cache())
            elif command == "weights":
                install_when_idle(core, *payload)
            elif command == "stop":
                return outputs, True

    def _fail_all(self, core: EngineCore, error: Exception) -> None:
        ids = {s.request_id for s in (*core.scheduler.waiting, *core.scheduler.running)}
        for request_id in ids:
            core.scheduler.remove(request_id)
        failure = EngineUnavailable(f"the engine step failed: {error!r}")
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._deliver_error, ids, failure)

    def _publish(self, outputs: list[RequestOutput]) -> None:
        if outputs and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, outputs)

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for request_id, chunk in outputs:
            stream = self._streams.get(request_id)
            if stream is not None:
                stream.put_nowait(chunk)

    def _deliver_error(self, request_ids: set[str], error: Exception) -> None:
        for request_id in request_ids:
            stream = self._streams.get(request_id)
            if stream is not None:
                stream.put_nowait(error)
