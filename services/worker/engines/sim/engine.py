"""`SimEngine`: the latency-model engine behind the worker protocol (a documented simulator, not a model)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import asdict, replace
from pathlib import Path

from tokenizers import Tokenizer

from services.text.modeldir import read_model_dir
from services.worker.engine_api import (
    EngineFull,
    EngineLoad,
    EngineModelInfo,
    GenerateInput,
    Health,
    InvalidRequest,
    OutputChunk,
    WeightsRejected,
    validate_common,
)
from services.worker.engines.sim.profile import SimProfile
from services.worker.engines.sim.scheduler import SimScheduler
from services.worker.engines.sim.sequence import Vocabulary, make_samples
from services.worker.kv_events import KvEventLog
from services.worker.model_info import read_model_info

log = logging.getLogger(__name__)

SIM_VERSION = "0.1.0"


def load_vocabulary(model_dir: str | Path, info: EngineModelInfo) -> Vocabulary:
    """Token ids that decode to clean text on their own (no special tokens, control bytes or partial UTF-8)."""
    specials = read_model_dir(model_dir).special_token_ids
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        ids = tuple(i for i in range(info.vocab_size) if i not in specials and i not in info.eos_token_ids)
        return Vocabulary(ids, info.eos_token_ids)
    tok = Tokenizer.from_file(str(path))
    candidates = [i for i in range(tok.get_vocab_size(with_added_tokens=True)) if i not in specials]
    texts = tok.decode_batch([[i] for i in candidates])
    ids = tuple(i for i, text in zip(candidates, texts, strict=True) if _is_clean(text))
    return Vocabulary(ids or tuple(candidates), info.eos_token_ids)


def _is_clean(text: str) -> bool:
    """Printable text (spaces and newlines allowed), no replacement character from partial UTF-8."""
    return bool(text.strip()) and "\ufffd" not in text and all(c.isprintable() or c in "\n\t" for c in text)


def check_sim_checkpoint(path: Path, vocab_size: int) -> None:
    """What the simulator can check of a checkpoint: a readable config.json of the served vocabulary."""
    config = path / "config.json"
    try:
        got = json.loads(config.read_text()).get("vocab_size")
    except (OSError, ValueError) as e:
        raise WeightsRejected(f"model_path: {config} cannot be read ({e})") from e
    if got != vocab_size:
        raise WeightsRejected(f"model_path: {config} has vocab_size {got}, the served model {vocab_size}")


class SimEngine:
    """Implements `Engine` with `SimScheduler`; token ids come from the served tokenizer's vocabulary."""

    def __init__(
        self,
        profile: SimProfile,
        model_dir: str | Path,
        served_model_name: str | None = None,
        time_scale: float = 1.0,
        weight_version: str = "default",
    ) -> None:
        info = read_model_info(model_dir, served_model_name)
        self._info = replace(info, engine="sim", engine_version=SIM_VERSION, weight_version=weight_version)
        self._profile = profile
        self._time_scale = time_scale
        self._sched = SimScheduler(profile, load_vocabulary(model_dir, self._info), time_scale)
        self._is_started = False

    async def start(self) -> None:
        if not self._is_started:
            self._sched.start()
            self._is_started = True

    async def stop(self) -> None:
        await self._sched.stop()
        self._is_started = False

    def model_info(self) -> EngineModelInfo:
        return self._info

    def validate(self, req: GenerateInput) -> None:
        validate_common(req, self._info)

    async def generate(self, req: GenerateInput) -> AsyncGenerator[OutputChunk, None]:
        self.validate(req)
        if req.sampling.constraint is not None:
            log.warning(
                "structured output ignored", extra={"request_id": req.request_id, "kind": req.sampling.constraint[0]}
            )
        if self._sched.has_request(req.request_id):
            raise InvalidRequest("request_id", f"{req.request_id!r} is already running")
        n = req.sampling.n
        if self._sched.num_waiting + n > self._profile.max_waiting_requests:
            raise EngineFull(f"waiting queue full ({self._sched.num_waiting}/{self._profile.max_waiting_requests})")
        sink: asyncio.Queue[OutputChunk] = asyncio.Queue()
        self._sched.submit(make_samples(req, self._info.max_context_length, self._profile.output_length, sink))
        remaining = n
        try:
            while remaining:
                chunk = await sink.get()
                remaining -= chunk.finished
                yield chunk
        finally:
            if remaining:  # the consumer went away (client cancel): free the request's KV now
                self._sched.abort(req.request_id, notify=False)

    async def abort(self, request_id: str) -> bool:
        return self._sched.abort(request_id)

    def load(self) -> EngineLoad:
        return self._sched.load()

    @property
    def kv_event_log(self) -> KvEventLog:
        """SubscribeKvEvents: the simulated prefix cache's pages."""
        return self._sched.kv_event_log

    @property
    def simulated_s(self) -> float:
        """Model time the scheduler has stepped through (what the latency model says the work costs)."""
        return self._sched.simulated_s

    async def flush_cache(self) -> bool:
        return self._sched.flush()

    async def update_weights(self, model_path: str, weight_version: str) -> None:
        """No weights: check the checkpoint's config fits, wait the profile's modelled load time, swap the label."""
        check_sim_checkpoint(Path(model_path), self._info.vocab_size)
        if self._time_scale > 0:
            await asyncio.sleep(self._profile.weight_load_s * self._time_scale)
        self._info = replace(self._info, weight_version=weight_version)

    async def health(self) -> Health:
        if not self._is_started:
            return Health(False, "sim engine not started")
        return Health(True, "sim engine running (a latency model, not a language model)")

    def server_args(self) -> Mapping[str, str | int | float | bool]:
        flat = {k: v for k, v in asdict(self._profile).items() if isinstance(v, str | int | float | bool)}
        flat["structured_output"] = "ignored: the sim engine does not enforce json_schema, regex or ebnf"
        return {**flat, "time_scale": self._time_scale, "output_length": self._profile.output_length.kind}
