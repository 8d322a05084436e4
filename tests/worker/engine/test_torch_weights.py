"""Weight updates of the torch engine on the real tiny MiMo: in place, exact, refused when corrupt.

A "new checkpoint" is the tiny model with every tensor perturbed (MTP layer included), written as a HF
directory next to copies of the tokenizer files, as a trainer writes one.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from services.worker.engine_api import GenerateInput, SamplingConfig, WeightsRejected
from services.worker.engines.torch import TorchEngine, TorchEngineConfig
from services.worker.model import load_mimo

TINY = Path(__file__).parents[3] / "models" / "tiny-mimo"
PROMPT = [1, 10, 200, 33, 45, 2, 1, 77, 78, 79, 80]


def write_checkpoint(dest: Path, tensors: dict[str, torch.Tensor]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY / name, dest / name)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dest / "model.safetensors"))
    return dest


def perturbed(seed: int, scale: float = 0.5) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    base = load_file(str(TINY / "model.safetensors"))
    return {
        k: (v.float() + scale * torch.randn(v.shape, generator=gen) * v.float().std()).to(v.dtype)
        for k, v in base.items()
    }


@pytest.fixture(scope="module")
def new_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("step1"), perturbed(1))


async def running(model_dir: Path) -> TorchEngine:
    engine = TorchEngine(TorchEngineConfig(model_dir=str(model_dir), kv_cache_tokens=4096, max_running_requests=8))
    await engine.start()
    return engine


@pytest.fixture
async def engine() -> AsyncIterator[TorchEngine]:
    e = await running(TINY)
    yield e
    await e.stop()


async def output(
    engine: TorchEngine, rid: str, sampling: SamplingConfig | None = None
) -> tuple[list[int], list[float]]:
    req = GenerateInput(
        request_id=rid,
        input_ids=tuple(PROMPT),
        sampling=sampling or SamplingConfig(temperature=0.0, max_new_tokens=40, ignore_eos=True),
        return_logprob=True,
    )
    ids: list[int] = []
    logprobs: list[float] = []
    async for chunk in engine.generate(req):
        ids += chunk.token_ids
        logprobs += chunk.logprobs
    return ids, logprobs


async def test_update_equals_a_fresh_engine_of_the_new_checkpoint(engine: TorchEngine, new_ckpt: Path) -> None:
    before, before_lp = await output(engine, "before")  # the prefix cache now holds this prompt's old KV
    await engine.update_weights(str(new_ckpt), "step-1")
    assert await engine.flush_cache()
    after, after_lp = await output(engine, "after")
    fresh = await running(new_ckpt)
    try:
        expected, expected_lp = await output(fresh, "fresh")
    finally:
        await fresh.stop()
    assert after == expected, "greedy output after the update differs from a fresh engine of the checkpoint"
    torch.testing.assert_close(torch.tensor(after_lp), torch.tensor(expected_lp))
    assert after != before, "the perturbed checkpoint should change the greedy output"
    assert not torch.allclose(torch.tensor(after_lp), torch.tensor(before_lp)), "the old weights still answer"
    assert engine.model_info().weight_version == "step-1"


def corrupt_variants(tmp: Path) -> dict[str, tuple[Path, str]]:
    base = perturbed(2)
    missing = dict(base)
    del missing["model.mtp_layers.0.input_proj.weight"]
    extra = {**base, "model.layers.9.mlp.up_proj.weight": base["model.layers.0.mlp.up_proj.weight"].clone()}
    shape = {**base, "lm_head.weight": base["lm_head.weight"][:-1]}
    dtype = {**base, "model.norm.weight": base["model.norm.weight"].to(torch.int32)}
    out = {
        "missing": (
            write_checkpoint(tmp / "missing", missing),
            "missing tensors ['model.mtp_layers.0.input_proj.weight']",
        ),
        "extra": (write_checkpoint(tmp / "extra", extra), "unexpected tensors ['model.layers.9.mlp.up_proj.weight']"),
        "shape": (write_checkpoint(tmp / "shape", shape), "tensor lm_head.weight has shape [575, 256]"),
        "dtype": (write_checkpoint(tmp / "dtype", dtype), "tensor model.norm.weight has dtype int32"),
    }
    truncated = write_checkpoint(tmp / "truncated", base)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    out["truncated"] = (truncated, "is truncated or not a safetensors file")
    out["absent"] = (tmp / "nowhere", "is not a directory")
    return out


async def test_a_corrupt_checkpoint_is_refused_and_the_old_weights_keep_serving(
    engine: TorchEngine, tmp_path: Path
) -> None:
    before, _ = await output(engine, "before")
    for kind, (path, message) in corrupt_variants(tmp_path).items():
        with pytest.raises(WeightsRejected) as err:
            await engine.update_weights(str(path), f"bad-{kind}")
        assert message in str(err.value), (kind, str(err.value))
        assert "model_path" in str(err.value)
    assert engine.model_info().weight_version == "default"
    assert (await output(engine, "after"))[0] == before


async def test_sampled_logprobs_equal_a_forward_pass_of_the_checkpoint(engine: TorchEngine, new_ckpt: Path) -> None:
    """Logprobs are of the distribution sampled from, after temperature (and penalties), before top-k/top-p."""
    await engine.update_weights(str(new_ckpt), "step-1")
    temperature = 0.8
    sampling = SamplingConfig(temperature=temperature, max_new_tokens=30, ignore_eos=True, seed=7)
    ids, logprobs = await output(engine, "sampled", sampling)
    assert len(logprobs) == len(ids) == 30
    model = load_mimo(new_ckpt, "cpu", torch.float32)
    with torch.no_grad():
        tokens = torch.tensor([PROMPT + ids])
        logits = model.compute_logits(model(tokens, torch.arange(tokens.shape[1])))[0, len(PROMPT) - 1 : -1]
        want = torch.log_softmax(logits / temperature, -1).gather(1, torch.tensor(ids)[:, None]).squeeze(1)
    torch.testing.assert_close(torch.tensor(logprobs), want, atol=2e-4, rtol=1e-4)
