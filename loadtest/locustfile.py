"""The same users and shapes for locust's own CLI and web UI (no SLO exit code; use `python -m loadtest` for that).

locust -f loadtest/locustfile.py --host 127.0.0.1:50051 --mimo-tasks chat,chat_stream --mimo-shape step
"""

from __future__ import annotations

from typing import Any

from locust import LoadTestShape, events

from loadtest.schedules import SCHEDULES, stage_at
from loadtest.tasks import TASKS, MimoUser, chat, chat_stream
from loadtest.workload import Workload


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    group = parser.add_argument_group("MiMo Serve")
    group.add_argument("--mimo-tasks", default="chat,chat_stream", help=f"comma-separated, from {','.join(TASKS)}")
    group.add_argument("--mimo-verifier", default="", help="verifier HOST:PORT (for the verify task)")
    group.add_argument("--mimo-shape", choices=sorted(SCHEDULES), default="steady", help="shape over --run-time")
    group.add_argument("--mimo-max-new-tokens", type=int, default=32)


class MimoWebUser(MimoUser):
    """The user locust's CLI spawns; its tasks and verifier come from the --mimo-* options at init."""

    host = "127.0.0.1:50051"
    tasks = [chat, chat_stream]  # noqa: RUF012 (locust declares `tasks` on User)


@events.init.add_listener
def configure_user(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    names = [t.strip() for t in options.mimo_tasks.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise ValueError(f"--mimo-tasks: unknown {unknown}; choose from {','.join(TASKS)}")
    MimoWebUser.tasks = [TASKS[t] for t in names]
    MimoWebUser.verifier_host = options.mimo_verifier or None
    MimoWebUser.workload = Workload(max_new_tokens=options.mimo_max_new_tokens)


class MimoShape(LoadTestShape):
    """--mimo-shape over the users, spawn rate and run time given on the command line or in the web UI."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        options = self.runner.environment.parsed_options
        assert options is not None  # set by locust's CLI
        num_users, spawn_rate = int(options.num_users or 1), float(options.spawn_rate or 1)
        if not options.run_time:
            return num_users, spawn_rate  # no run time: hold until stopped
        stages = SCHEDULES[options.mimo_shape](num_users, spawn_rate, float(options.run_time))
        stage = stage_at(stages, self.get_run_time())
        return None if stage is None else (stage.num_users, stage.spawn_rate)
