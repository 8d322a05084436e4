"""The SDK's view of dynamic sampling: the request fields it sends and the report fields it reads back."""

from __future__ import annotations

from mimo_client import _calls
from mimo_client.types import GroupFinished, RolloutFinished, RolloutPrompt, rollout_event_from_pb
from mimo_client.v1 import rollout_pb2


def test_dynamic_sampling_fields_reach_the_request():
    spec, _ = _calls.rollout(
        [RolloutPrompt("p", token_ids=[1, 2])], 4, {}, early_termination="launch_order", mode="seamless",
        target_valid_groups=1, oversampling=1.5, max_prompts_launched=9, scorer="rm:50060",
    )  # fmt: skip
    r = spec.request
    assert r.early_termination == rollout_pb2.EARLY_TERMINATION_POLICY_LAUNCH_ORDER
    assert (r.target_valid_groups, r.oversampling, r.max_prompts_launched, r.scorer) == (1, 1.5, 9, "rm:50060")
    assert not r.prompts[0].HasField("math") and not r.prompts[0].HasField("code")  # an open reward


def test_the_batch_report_and_dataset_stats_are_read_back():
    group = rollout_event_from_pb(rollout_pb2.RolloutEvent(group=rollout_pb2.GroupFinished(zero_variance=True)))
    assert isinstance(group, GroupFinished) and group.zero_variance and not group.scored
    finished = rollout_pb2.RolloutFinished(selected_prompt_ids=["a"], num_groups_zero_variance=2, target_met=True)
    finished.dataset_stats.add(prompt_id="a", rollouts=3, pass_rate=1.0, easy=True)
    event = rollout_event_from_pb(rollout_pb2.RolloutEvent(finished=finished))
    assert isinstance(event, RolloutFinished)
    assert event.selected_prompt_ids == ["a"] and event.num_groups_zero_variance == 2 and event.target_met
    assert event.dataset_stats[0].easy and event.dataset_stats[0].rollouts == 3
