"""Fleet weight updates through the router's mimo.v1.Admin, on real processes over loopback: a tokenizer service,
sim workers (a latency model whose weight update checks the checkpoint's config and takes the profile's modelled
load time) and the router, driven by the SDK's AsyncMimoClient."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mimo_client import AsyncMimoClient, InvalidArgument, RolloutFinished, RolloutPrompt, SampleFinished

from services.stack import Stack, random_ports_plan
from tests.support.router_stack import SIM_PROFILE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIME_SCALE = 0.25  # sim weight load 8 s x 0.25 = 2 s
PROMPTS = [RolloutPrompt(f"p{i}", token_ids=[1, 82, 71, 78, 2, 1, 90 + i, 91, 92]) for i in range(12)]


def checkpoint(tiny: Path, dest: Path, vocab_size: int | None = None) -> Path:
    """What the sim reads of a checkpoint: its config.json (a different vocabulary makes it refuse)."""
    dest.mkdir(parents=True)
    config = json.loads((tiny / "config.json").read_text())
    if vocab_size is not None:
        config["vocab_size"] = vocab_size
    (dest / "config.json").write_text(json.dumps(config))
    return dest


@contextlib.asynccontextmanager
async def fleet(tmp_path: Path, model: Path, num_workers: int = 2):
    """The stack (no verifier: the prompts have no reward task) and an SDK client of its router."""
    plan = random_ports_plan(
        model,
        engine="sim",
        num_workers=num_workers,
        worker_args=("--profile", str(SIM_PROFILE), "--time-scale", str(TIME_SCALE)),
        router_args=("--health-interval-s", "0.3"),
    )
    stack = Stack([s for s in plan.specs() if s.name != "verifier"], tmp_path / "logs")
    await stack.start()
    try:
        async with AsyncMimoClient(stack.child("router").spec.target, timeout_s=60, stream_timeout_s=120) as client:
            await wait_for(lambda: routable_workers(client), lambda n: n == num_workers)
            yield stack, client
    finally:
        await stack.stop()


async def routable_workers(client: AsyncMimoClient) -> int:
    return sum(w.routable for w in (await client.weight_versions()).workers)


async def wait_for(probe, done, timeout_s: float = 60.0):
    """Poll `probe()` until `done(value)`; the last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await probe()
        if done(value) or loop.time() > deadline:
            return value
        await asyncio.sleep(0.05)


async def rollout(client: AsyncMimoClient, n: int = 4, max_new_tokens: int = 48, **options) -> AsyncIterator:
    return client.rollout(
        PROMPTS, samples_per_prompt=n, max_new_tokens=max_new_tokens, max_samples_in_flight=16, **options
    )


async def collect(events) -> tuple[list[SampleFinished], RolloutFinished]:
    samples, finished = [], None
    async for event in events:
        if isinstance(event, SampleFinished):
            samples.append(event)
        elif isinstance(event, RolloutFinished):
            finished = event
    assert finished is not None
    return samples, finished


async def chats_until(client: AsyncMimoClient, stop: asyncio.Event) -> int:
    """Chats one after another until `stop`; raises on the first failure."""
    count = 0
    while not stop.is_set():
        reply = await client.generate([1, 82, 71, 78], max_new_tokens=4, timeout_s=60)
        assert reply.choices[0].token_ids
        count += 1
    return count


async def test_an_update_waits_for_the_running_rollout_and_loses_nothing(tiny_model, tmp_path):
    new = checkpoint(tiny_model, tmp_path / "step-1")
    async with fleet(tmp_path, tiny_model) as (_, client):
        events = (await rollout(client)).__aiter__()
        first = await events.__anext__()  # the rollout is running
        stop = asyncio.Event()
        chatting = asyncio.create_task(chats_until(client, stop))
        update = asyncio.create_task(client.update_weights(str(new), "1", timeout_s=120))
        samples, finished = await collect(events)
        result = await update
        stop.set()
        assert await chatting > 0  # plain requests kept being served, none failed, through the update

        samples = [first, *samples] if isinstance(first, SampleFinished) else samples
        assert len(samples) == len(PROMPTS) * 4 and finished.num_samples_aborted == 0
        assert {s.sample_weight_version for s in samples} == {"default"}  # all made before the update
        assert result.num_rollouts_waited == 1 and not result.failed
        assert [w.weight_version for w in result.workers] == ["1", "1"]

        after, _ = await collect(await rollout(client, n=2))
        assert {s.sample_weight_version for s in after} == {"1"}
        versions = await client.weight_versions()
        assert versions.weight_version == "1" and all(w.routable and w.weight_version == "1" for w in versions.workers)


async def test_abort_running_returns_partial_samples_marked_and_every_sample_accounted_for(tiny_model, tmp_path):
    new = checkpoint(tiny_model, tmp_path / "step-1")
    async with fleet(tmp_path, tiny_model) as (_, client):
        events = (await rollout(client, max_new_tokens=400)).__aiter__()
        first = await events.__anext__()
        result = await client.update_weights(str(new), "1", abort_running=True, timeout_s=120)
        samples, finished = await collect(events)
        samples = [first, *samples] if isinstance(first, SampleFinished) else samples

        assert sum(w.num_aborted for w in result.workers) > 0
        assert len(samples) == len(PROMPTS) * 4  # every sample comes back, finished or aborted
        aborted = [s for s in samples if s.finish_reason == "abort"]
        assert aborted and finished.num_samples_aborted == len(aborted)
        assert all(0 < len(s.token_ids) < 400 and s.sample_weight_version == "default" for s in aborted)
        assert all(s.sample_weight_version in {"default", "1"} for s in samples)  # none unlabelled


async def test_a_worker_that_fails_its_update_leaves_routing_and_is_named(tiny_model, tmp_path):
    other = checkpoint(tiny_model, tmp_path / "other-vocab", vocab_size=1000)
    new = checkpoint(tiny_model, tmp_path / "step-1")
    async with fleet(tmp_path, tiny_model) as (stack, client):
        # worker-1 serves a model of another vocabulary: the new checkpoint does not fit it
        worker1 = stack.child("worker-1")
        url1 = worker1.spec.target
        worker1.process.terminate()
        await worker1.process.wait()
        args = list(worker1.spec.args)
        args[args.index("--model") + 1] = str(other)
        worker1.spec = dataclasses.replace(worker1.spec, args=tuple(args))
        await stack._spawn(worker1)
        await wait_for(lambda: routable_workers(client), lambda n: n == 2)

        result = await client.update_weights(str(new), "1", timeout_s=120)
        (failed,) = result.failed
        assert failed.worker.endswith(url1) and "vocab_size" in failed.error
        versions = await client.weight_versions()
        held = next(w for w in versions.workers if w.worker.endswith(url1))
        assert not held.routable and "vocab_size" in held.reason
        models = await client.list_models()
        assert models[0].num_workers == 1
        after, _ = await collect(await rollout(client, n=2))
        assert {s.sample_weight_version for s in after} == {"1"}  # only the updated worker served


async def test_a_checkpoint_every_worker_refuses_leaves_the_old_version_serving(tiny_model, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    async with fleet(tmp_path, tiny_model) as (_, client):
        with pytest.raises(InvalidArgument, match="model_path"):
            await client.update_weights(str(broken), "1", timeout_s=120)
        versions = await client.weight_versions()
        assert versions.weight_version in {"", "default"} and all(w.routable for w in versions.workers)
        reply = await client.generate([1, 82, 71, 78], max_new_tokens=4)
        assert reply.choices[0].token_ids


async def test_a_worker_started_later_at_the_old_version_gets_no_traffic_until_it_catches_up(tiny_model, tmp_path):
    new = checkpoint(tiny_model, tmp_path / "step-1")
    async with fleet(tmp_path, tiny_model) as (stack, client):
        result = await client.update_weights(str(new), "1", timeout_s=120)
        assert not result.failed
        # worker-1 restarts (a crash, a rescheduled pod): it comes back serving its startup weights
        worker1 = stack.child("worker-1")
        url = worker1.spec.target
        worker1.process.kill()
        await worker1.process.wait()
        await stack._spawn(worker1)

        async def late_worker():
            return next(w for w in (await client.weight_versions()).workers if w.worker.endswith(url))

        held = await wait_for(late_worker, lambda w: w.state == "ready" and w.weight_version == "default")
        assert held.weight_version == "default" and not held.routable  # ready, but behind the fleet
        samples, _ = await collect(await rollout(client, n=2))  # runs while it catches up (a 2 s modelled load)
        assert {s.sample_weight_version for s in samples} == {"1"}
        caught_up = await wait_for(late_worker, lambda w: w.routable)
        assert caught_up.routable and caught_up.weight_version == "1"


async def test_a_rollout_can_require_a_minimum_weight_version(tiny_model, tmp_path):
    from mimo_client import FailedPrecondition

    new = checkpoint(tiny_model, tmp_path / "step-3")
    async with fleet(tmp_path, tiny_model) as (_, client):
        await client.update_weights(str(new), "3", timeout_s=120)
        with pytest.raises(FailedPrecondition, match="min_weight_version"):
            await collect(await rollout(client, n=1, min_weight_version="4"))
        samples, _ = await collect(await rollout(client, n=1, min_weight_version="2"))
        assert {s.sample_weight_version for s in samples} == {"3"}


async def test_one_update_at_a_time_and_bad_arguments_name_the_field(tiny_model, tmp_path):
    from mimo_client import Aborted

    new = checkpoint(tiny_model, tmp_path / "step-1")
    async with fleet(tmp_path, tiny_model) as (_, client):
        first = asyncio.create_task(client.update_weights(str(new), "1", timeout_s=120))
        await wait_for(lambda: client.weight_versions(), lambda v: v.is_updating)
        with pytest.raises(Aborted, match="one at a time"):
            await client.update_weights(str(new), "2", timeout_s=120)
        assert not (await first).failed
        for kwargs, field in (({"weight_version": ""}, "weight_version"), ({"model_path": ""}, "model_path")):
            args = {"model_path": str(new), "weight_version": "3", **kwargs}
            with pytest.raises(InvalidArgument, match=field):
                await client.update_weights(args["model_path"], args["weight_version"], timeout_s=30)
        with pytest.raises(InvalidArgument, match="timeout_s"):
            await client.update_weights(str(new), "3", update_timeout_s=-1, timeout_s=30)
        assert (await client.weight_versions()).weight_version == "1"
