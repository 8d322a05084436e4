"""Training-grade rollout samples on the tiny MiMo through the whole stack: prompt ids, logprobs, version.

The logprobs in each SampleFinished must equal a forward pass of the checkpoint that generated it, and the
sample must name that checkpoint's weight version, before and after a weight update of the worker.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest
import torch
from mimo_client.v1 import common_pb2, rollout_pb2, rollout_pb2_grpc, verifier_pb2
from mimo_client.v1 import worker_control_pb2 as wc
from mimo_client.v1 import worker_control_pb2_grpc as wc_grpc
from safetensors.torch import load_file, save_file

from services.stack import Stack, random_ports_plan
from services.worker.model import load_mimo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROMPTS = [[1, 82, 71, 78, 2, 1, 90, 91, 92, 93], [1, 82, 71, 78, 2, 1, 100, 101, 102, 103, 104]]


def step_checkpoint(tiny: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny / name, dest / name)
    gen = torch.Generator().manual_seed(3)
    state = {k: (v.float() + 0.3 * v.float().std() * torch.randn(v.shape, generator=gen)).to(v.dtype)
             for k, v in load_file(str(tiny / "model.safetensors")).items()}  # fmt: skip
    save_file(state, str(dest / "model.safetensors"))
    return dest


def forward_logprobs(model_dir: Path, prompt: list[int], response: list[int], temperature: float) -> torch.Tensor:
    model = load_mimo(model_dir, "cpu", torch.float32)
    with torch.no_grad():
        ids = torch.tensor([prompt + response])
        logits = model.compute_logits(model(ids, torch.arange(ids.shape[1])))[0, len(prompt) - 1 : -1]
        return torch.log_softmax(logits / temperature, -1).gather(1, torch.tensor(response)[:, None]).squeeze(1)


async def samples(router: str, temperature: float) -> list[rollout_pb2.SampleFinished]:
    request = rollout_pb2.RolloutRequest(
        rollout_id="train",
        prompts=[
            rollout_pb2.RolloutPrompt(
                prompt_id=f"p{i}", token_ids=common_pb2.TokenIds(ids=ids), math=verifier_pb2.MathTask(references=["1"])
            )
            for i, ids in enumerate(PROMPTS)
        ],
        samples_per_prompt=2,
        weight_version="echoed",
        sampling=common_pb2.SamplingParams(temperature=temperature, max_new_tokens=30),
    )
    async with grpc.aio.insecure_channel(router) as channel:
        events = [e async for e in rollout_pb2_grpc.RolloutStub(channel).Rollout(request, timeout=300)]
    return [e.sample for e in events if e.HasField("sample")]


def check(found: list[rollout_pb2.SampleFinished], model_dir: Path, version: str, temperature: float) -> None:
    assert len(found) == 4
    for s in found:
        prompt = PROMPTS[s.prompt_index]
        assert list(s.prompt_token_ids) == prompt
        assert s.weight_version == version and len(s.logprobs) == len(s.token_ids) > 0
        want = forward_logprobs(model_dir, prompt, list(s.token_ids), temperature)
        torch.testing.assert_close(torch.tensor(list(s.logprobs)), want, atol=3e-4, rtol=1e-4)


async def test_samples_carry_prompt_ids_logprobs_and_the_version_that_made_them(tiny_model, tmp_path):
    base = tmp_path / "step-0"
    shutil.copytree(tiny_model, base)
    stack = Stack(random_ports_plan(base, engine="torch", num_workers=1).specs(), tmp_path / "logs")
    await stack.start()
    try:
        router = stack.child("router").spec.target
        check(await samples(router, 0.8), base, "default", 0.8)
        step1 = step_checkpoint(tiny_model, tmp_path / "step-1")
        async with grpc.aio.insecure_channel(stack.child("worker-0").spec.target) as channel:
            await wc_grpc.WorkerControlStub(channel).UpdateWeights(
                wc.UpdateWeightsRequest(model_path=str(step1), weight_version="step-1"), timeout=120
            )
        check(await samples(router, 1.0), step1, "step-1", 1.0)
    finally:
        await stack.stop()
