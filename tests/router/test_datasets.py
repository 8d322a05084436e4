"""Datasets with memory: the easy pool gets ~alpha of the draws, state survives a router restart (the state file
read back the way `mimo-serve router --dataset ... --state-dir ...` does), and a dataset rollout exports it."""

from __future__ import annotations

import json
import math
import random

import pytest
from mimo_client.v1 import common_pb2, rollout_pb2, verifier_pb2

from services.router import wire
from services.router.datasets import Dataset, DatasetRegistry, EasyPool
from services.router.domain import GroupFinished, InvalidRequest, Prompt, RolloutFinished, RolloutPrompt
from services.router.rewards import RewardClient
from services.router.rollout import stream_rollout
from services.router.rollout_runs import RolloutRuns, load_dataset, parse_dataset_flag
from services.router.scorers import ScorerPool
from tests.support.rollout_policy import paced_pipeline, scripted_verifier


def problems(count: int) -> tuple[RolloutPrompt, ...]:
    return tuple(RolloutPrompt(i, f"q{i}", Prompt(token_ids=(i + 1, 5)), None) for i in range(count))


def test_the_easy_pool_gets_about_alpha_of_the_draws():
    data = Dataset("d", problems(100), EasyPool(alpha=0.1))
    for i in range(10):
        data.record(f"q{i}", 1.0)  # solved every time: into the easy pool
    data.record("q50", 0.5)
    rng, draws = random.Random(1234), 4000
    easy = sum(data.is_easy(data.draw(rng, set()).prompt_id) for _ in range(draws))  # type: ignore[union-attr]
    sigma = math.sqrt(0.1 * 0.9 / draws)
    assert abs(easy / draws - 0.1) < 4 * sigma, easy / draws  # fixed seed; 4 sigma is ±1.9 points
    assert not data.is_easy("q50")


def test_a_problem_leaves_the_easy_pool_when_it_fails_again_and_draws_never_repeat_in_a_rollout():
    data = Dataset("d", problems(3), EasyPool(alpha=1.0))
    data.record("q0", 1.0)
    assert data.is_easy("q0")
    data.record("q0", 0.5)
    assert not data.is_easy("q0") and data.stat("q0").rollouts == 2 and data.stat("q0").pass_rate == 0.75
    source = DatasetRegistry([data]).source("d", 7)
    assert sorted(source.draw(i).prompt_id for i in range(3)) == ["q0", "q1", "q2"]  # type: ignore[union-attr]
    assert source.draw(3) is None


def test_state_survives_a_restart(tmp_path):
    flag = parse_dataset_flag("math=unused.jsonl,alpha=0.2,scorer=127.0.0.1:9")
    assert (flag.name, flag.alpha, flag.scorer) == ("math", 0.2, "127.0.0.1:9")
    before = load_dataset(flag, problems(5), tmp_path)
    before.record("q1", 1.0)
    before.record("q2", 0.25)
    before.save(force=True)
    after = load_dataset(flag, problems(5), tmp_path)  # a new router process reads the same volume
    assert after.is_easy("q1") and not after.is_easy("q2")
    assert after.stat("q2").pass_rate == 0.25 and after.stat("q2").rollouts == 1
    assert json.loads((tmp_path / "math.state.json").read_text())["problems"]["q1"]["easy"] is True


def test_bad_dataset_flags_and_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="NAME=FILE"):
        parse_dataset_flag("nofile")
    with pytest.raises(ValueError, match="unknown option"):
        parse_dataset_flag("a=b.jsonl,colour=red")
    with pytest.raises(InvalidRequest) as e:
        DatasetRegistry().get("nope")
    assert e.value.field == "dataset"
    path = tmp_path / "d.jsonl"
    path.write_text('{"promptId": "a", "tokenIds": {"ids": [1]}}\n{"promptId": "b", "tokenIds": {"ids": []}}\n')
    with pytest.raises(InvalidRequest) as e:
        wire.dataset_prompts(str(path), 1000)
    assert e.value.field.startswith(f"{path}:2")


async def test_a_dataset_rollout_records_pass_rates_and_exports_them(model_dir, tmp_path):
    path = tmp_path / "set.jsonl"
    lines = []
    for i in range(6):
        p = rollout_pb2.RolloutPrompt(prompt_id=f"q{i}", token_ids=common_pb2.TokenIds(ids=[i + 1, 9]))
        p.math.CopyFrom(verifier_pb2.MathTask(references=["1"]))
        lines.append(_json(p))
    path.write_text("\n".join(lines) + "\n")
    correct = {"q0": {0, 1}, "q1": {0}, "q2": {0}, "q3": {0}, "q4": {0}, "q5": {0}}
    async with paced_pipeline(model_dir, {}) as (pipeline, _), scripted_verifier(correct) as (target, _):
        data = load_dataset(
            parse_dataset_flag(f"set={path}"), wire.dataset_prompts(str(path), pipeline.vocab_size), tmp_path
        )
        runs = RolloutRuns(ScorerPool(RewardClient(target)), DatasetRegistry([data]))
        request = rollout_pb2.RolloutRequest(
            dataset="set", samples_per_prompt=2, target_valid_groups=5, sampling=common_pb2.SamplingParams(seed=3)
        )
        spec = wire.rollout_spec(request, pipeline.vocab_size, None)
        events = [e async for e in stream_rollout(runs.build(pipeline, spec))]
        await runs.close()
    (finished,) = [e for e in events if isinstance(e, RolloutFinished)]
    groups = [e for e in events if isinstance(e, GroupFinished)]
    assert len(groups) == 6 and finished.batch.target_met  # q0 is all correct: a sixth draw was needed
    stats = {s.prompt_id: s for s in finished.batch.dataset_stats}
    assert stats["q0"].easy and stats["q0"].pass_rate == 1.0 and stats["q1"].pass_rate == 0.5
    saved = json.loads((tmp_path / "set.state.json").read_text())["problems"]
    assert saved["q0"]["easy"] is True and saved["q3"]["rollouts"] == 1
    pb = wire.rollout_event_pb(spec, finished)
    assert {s.prompt_id for s in pb.finished.dataset_stats} == set(stats)


def _json(p: rollout_pb2.RolloutPrompt) -> str:
    from google.protobuf import json_format

    return json.dumps(json_format.MessageToDict(p))
