"""Locust load shapes over the schedules: steady, step and spike, chosen with --shape."""

from __future__ import annotations

from locust import LoadTestShape

from loadtest.schedules import Stage, stage_at


class StagesShape(LoadTestShape):
    """Plays a schedule (see loadtest.schedules); the test stops when the last stage ends."""

    def __init__(self, stages: tuple[Stage, ...]) -> None:
        super().__init__()
        self.stages = stages

    def tick(self) -> tuple[int, float] | None:
        stage = stage_at(self.stages, self.get_run_time())
        return None if stage is None else (stage.num_users, stage.spawn_rate)
