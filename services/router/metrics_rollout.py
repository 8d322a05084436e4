"""Rollout metrics, `mimo_router_rollout_*`."""

from prometheus_client import Counter, Histogram

SAMPLES = Counter("mimo_router_rollout_samples", "Rollout samples finished with a reward")
REWARD = Histogram("mimo_router_rollout_reward", "Reward per sample", buckets=(0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0))
PASS_RATE = Histogram(
    "mimo_router_rollout_group_pass_rate",
    "Share of a prompt's samples that were correct",
    buckets=(0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0),
)
GROUPS = Counter("mimo_router_rollout_groups", "Prompt groups finished", ["kind"])
REWARD_WAIT = Histogram(
    "mimo_router_rollout_reward_wait_seconds",
    "From a sample's last token to its reward",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EARLY_TERMINATIONS = Counter("mimo_router_rollout_early_terminations", "Rollouts ended early by FIFO termination")


def observe_sample(reward: float, wait_s: float) -> None:
    SAMPLES.inc()
    REWARD.observe(reward)
    REWARD_WAIT.observe(wait_s)


def observe_group(pass_rate: float) -> None:
    PASS_RATE.observe(pass_rate)
    GROUPS.labels("all_correct" if pass_rate == 1 else "all_wrong" if pass_rate == 0 else "mixed").inc()


REWARD_RETRIES = Counter(
    "mimo_router_rollout_reward_retries", "Verify calls retried after a transient verifier failure"
)
REWARD_ERRORS = Counter("mimo_router_rollout_reward_errors", "Samples whose reward stayed an error after retries")
