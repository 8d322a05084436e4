"""mimo.v1.Verifier over real gRPC on loopback: Verify, VerifyStream, bad input, admission, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from mimo_client.v1 import verifier_pb2 as pb
from mimo_client.v1 import verifier_pb2_grpc as pb_grpc
from prometheus_client import REGISTRY

from services.common.config import ServerSettings
from services.common.server import start
from services.verifier.pool import PoolSettings
from services.verifier.server import make_service
from services.verifier.verifier import Verifier, VerifierSettings
from tests.support.verifier_sandbox import FAST_LIMITS, fenced

pytestmark = pytest.mark.asyncio(loop_scope="module")
SETTINGS = VerifierSettings(
    math=PoolSettings(num_processes=1), limits=FAST_LIMITS, max_sandboxes=2, max_pending_tasks=50
)
SUM = "import sys\nprint(sum(map(int, sys.stdin.read().split())))"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stub() -> AsyncIterator[pb_grpc.VerifierStub]:
    verifier = Verifier(SETTINGS)
    verifier.start()
    running = await start(ServerSettings(service="verifier", listen="127.0.0.1:0", grace_s=1.0), make_service(verifier))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield pb_grpc.VerifierStub(channel)
    await running.drain()


def math_task(task_id: str, answer: str, *refs: str) -> pb.VerifyTask:
    response = f"<think>\nworking\n</think>\n\nThe answer is $\\boxed{{{answer}}}$."
    return pb.VerifyTask(task_id=task_id, response=response, math=pb.MathTask(references=list(refs)))


def code_task(task_id: str, source: str, mode: int = pb.REWARD_MODE_SOFT) -> pb.VerifyTask:
    tests = [
        pb.CodeTest(stdin="1 2", expected_stdout="3", level=1),
        pb.CodeTest(stdin="2 2", expected_stdout="4", level=1),
        pb.CodeTest(stdin="10 20", expected_stdout="31", level=2),
    ]
    return pb.VerifyTask(task_id=task_id, response=fenced(source), code=pb.CodeTask(tests=tests, reward_mode=mode))


async def test_verify_scores_math_and_code_in_request_order(stub: pb_grpc.VerifierStub) -> None:
    request = pb.VerifyRequest(
        tasks=[math_task("m-right", "\\frac{1}{2}", "0.5"), code_task("c", SUM), math_task("m-wrong", "3", "4")]
    )
    response = await stub.Verify(request, timeout=60)
    right, code, wrong = response.results
    assert [r.index for r in response.results] == [0, 1, 2]
    assert (right.task_id, right.reward, right.verdict, right.extracted_answer) == (
        "m-right",
        1.0,
        pb.VERDICT_CORRECT,
        "\\frac{1}{2}",
    )
    assert (wrong.reward, wrong.verdict) == (0.0, pb.VERDICT_INCORRECT) and wrong.reason
    # soft: level 1 (weight 1/2) fully passes, level 2 (1/2) fails: reward 1/2
    assert code.verdict == pb.VERDICT_PARTIAL and code.reward == pytest.approx(0.5)
    assert [t.status for t in code.tests] == [pb.TEST_STATUS_PASSED, pb.TEST_STATUS_PASSED, pb.TEST_STATUS_WRONG_ANSWER]
    assert "expected '31', got '30'" in code.tests[2].detail and code.extracted_answer.startswith("import sys")
    assert all(r.elapsed_s > 0 for r in response.results)


async def test_verify_stream_yields_every_task_once_with_its_index(stub: pb_grpc.VerifierStub) -> None:
    tasks = [code_task("slow", "import time\ntime.sleep(0.3)\n" + SUM)] + [
        math_task(f"m{i}", str(i), str(i)) for i in range(6)
    ]
    results = [r async for r in stub.VerifyStream(pb.VerifyRequest(tasks=tasks), timeout=60)]
    assert sorted(r.index for r in results) == list(range(7))
    assert {r.task_id: r.verdict for r in results}["m3"] == pb.VERDICT_CORRECT
    assert results[-1].task_id == "slow"  # results come as they finish, not in request order


@pytest.mark.parametrize(
    ("tasks", "field"),
    [
        ([], "tasks: empty"),
        ([pb.VerifyTask(task_id="x", response="hi")], "tasks[0].kind"),
        ([pb.VerifyTask(response="r", math=pb.MathTask())], "tasks[0].math.references"),
        ([pb.VerifyTask(response="r", math=pb.MathTask(references=["1", " "]))], "tasks[0].math.references[1]"),
        ([pb.VerifyTask(response="r", code=pb.CodeTask())], "tasks[0].code.tests"),
        (
            [pb.VerifyTask(response="r", code=pb.CodeTask(language="rust", tests=[pb.CodeTest()]))],
            "tasks[0].code.language",
        ),
        (
            [pb.VerifyTask(response="r", code=pb.CodeTask(tests=[pb.CodeTest(args_json="[1]", expected_json="1")]))],
            "tasks[0].code.tests[0].args_json",
        ),
        (
            [
                pb.VerifyTask(
                    response="r",
                    code=pb.CodeTask(entry_point="f", tests=[pb.CodeTest(args_json="[1", expected_json="1")]),
                )
            ],
            "tasks[0].code.tests[0].args_json: not valid JSON",
        ),
        (
            [pb.VerifyTask(response="r", code=pb.CodeTask(tests=[pb.CodeTest(level=3)], level_weights=[1]))],
            "level_weights",
        ),
        ([pb.VerifyTask(response="r", code=pb.CodeTask(tests=[pb.CodeTest()], time_limit_s=0))], "time_limit_s"),
        (
            [pb.VerifyTask(response="r", code=pb.CodeTask(tests=[pb.CodeTest()], memory_limit_bytes=1))],
            "memory_limit_bytes",
        ),
        ([pb.VerifyTask(response="r", code=pb.CodeTask(tests=[pb.CodeTest()], reward_mode=9))], "reward_mode"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    stub: pb_grpc.VerifierStub, tasks: list[pb.VerifyTask], field: str
) -> None:
    for call in (stub.Verify, stub.VerifyStream):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            result = call(pb.VerifyRequest(tasks=tasks), timeout=10)
            if call is stub.VerifyStream:
                _ = [r async for r in result]
            else:
                await result
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (e.value.details() or "")


async def test_too_many_pending_tasks_is_resource_exhausted(stub: pb_grpc.VerifierStub) -> None:
    tasks = [math_task(f"m{i}", "1", "1") for i in range(SETTINGS.max_pending_tasks + 1)]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Verify(pb.VerifyRequest(tasks=tasks), timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry" in (e.value.details() or "")


async def test_metrics_count_verdicts_and_tests(stub: pb_grpc.VerifierStub) -> None:
    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = sample("mimo_verifier_verdicts_total", {"kind": "math", "verdict": "correct"})
    passed = sample("mimo_verifier_tests_total", {"language": "python", "status": "passed"})
    await stub.Verify(pb.VerifyRequest(tasks=[math_task("m", "2", "2"), code_task("c", SUM)]), timeout=60)
    assert sample("mimo_verifier_verdicts_total", {"kind": "math", "verdict": "correct"}) == before + 1
    assert sample("mimo_verifier_tests_total", {"language": "python", "status": "passed"}) == passed + 2
    assert sample("mimo_verifier_pool_capacity", {"pool": "math"}) == 1
    assert sample("mimo_verifier_sandbox_enabled", {}) == 1
