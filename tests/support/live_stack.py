"""A real Prometheus scraping a running MiMo Serve stack, and the load that fills its dashboards.

Prometheus gets the labels the chart's ServiceMonitors give in a cluster (`job` = mimo-<part>,
`namespace`, and `pool` on workers), and the chart's rendered PrometheusRule as its rules file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from mimo_client.v1 import (
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    rollout_pb2,
    rollout_pb2_grpc,
    tokenizer_pb2,
    tokenizer_pb2_grpc,
    verifier_pb2,
    verifier_pb2_grpc,
)
from prometheus_client import REGISTRY

PROMETHEUS = "/usr/bin/prometheus"
NAMESPACE, POOL = "default", "llm"


@dataclass(frozen=True, slots=True)
class Target:
    job: str
    address: str
    labels: Mapping[str, str]
    honor_labels: bool = False


class OperatorMetricsOnly:
    """The test process's registry, limited to the operator's `mimo_operator_*` families."""

    def collect(self) -> Iterator[Any]:
        for family in REGISTRY.collect():
            if family.name.startswith("mimo_operator_"):
                yield family


def prometheus_config(targets: Sequence[Target], rules_file: Path) -> dict[str, Any]:
    jobs: dict[str, dict[str, Any]] = {}
    for t in targets:
        job = jobs.setdefault(t.job, {"job_name": t.job, "honor_labels": t.honor_labels, "static_configs": []})
        job["static_configs"].append({"targets": [t.address], "labels": dict(t.labels)})
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_file)],
        "scrape_configs": list(jobs.values()),
    }


class Prometheus:
    """/usr/bin/prometheus on a free port with our config; queried over its HTTP API."""

    def __init__(self, workdir: Path, port: int, config: dict[str, Any]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.args = [
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        self.log = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=out)
        deadline = time.monotonic() + 20
        while self._get("/-/ready") is None:
            assert self.process.poll() is None, f"prometheus exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "prometheus not ready in 20 s"
            time.sleep(0.1)
        return self

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/<path>; a 400 (bad PromQL) comes back as its error body."""
        try:
            body = self._get(f"/api/v1/{path}?" + urllib.parse.urlencode(params), raise_http=True)
        except urllib.error.HTTPError as e:
            return dict(json.loads(e.read()))
        assert body is not None, f"prometheus at {self.url} did not answer"
        return dict(json.loads(body))

    def query(self, promql: str) -> dict[str, Any]:
        return self.api("query", query=promql)

    def targets_up(self) -> dict[str, bool]:
        active = self.api("targets")["data"]["activeTargets"]
        return {t["scrapeUrl"]: t["health"] == "up" for t in active}

    def _get(self, path: str, raise_http: bool = False) -> bytes | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return bytes(response.read())
        except urllib.error.HTTPError:
            if raise_http:
                raise
            return None
        except OSError:
            return None


# Load ----------------------------------------------------------------------------------------------------

SYSTEM = common_pb2.ChatMessage(role="system", content="You are MiMo. Think step by step, then answer briefly.")


def chat(text: str) -> list[common_pb2.ChatMessage]:
    return [SYSTEM, common_pb2.ChatMessage(role="user", content=text)]


def sampling(tokens: int, **kw: Any) -> common_pb2.SamplingParams:
    return common_pb2.SamplingParams(max_new_tokens=tokens, **kw)


async def _quietly(call: Any) -> None:
    """Finish one started gRPC call (unary or stream); an error is part of the load (bad input, rejections)."""
    with contextlib.suppress(grpc.aio.AioRpcError):
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call


async def drive_inference(router: str, seconds: float, concurrency: int = 6) -> None:
    """Unary chats, streams and generate calls with shared prefixes; a few bad requests; one burst."""
    async with grpc.aio.insecure_channel(router) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        deadline = time.monotonic() + seconds

        async def user(i: int) -> None:
            k = 0
            while time.monotonic() < deadline:
                k += 1
                question = chat(f"What is {i} + {k % 3}?")
                await _quietly(stub.Chat(inference_pb2.ChatRequest(messages=question, sampling=sampling(24))))
                await _quietly(stub.ChatStream(inference_pb2.ChatRequest(messages=question, sampling=sampling(32))))
                request = inference_pb2.GenerateRequest(text=f"Count to {k}.", n=2, sampling=sampling(16))
                await _quietly(stub.Generate(request))

        async def bad_input() -> None:
            for _ in range(3):  # INVALID_ARGUMENT naming sampling.top_p
                bad = inference_pb2.GenerateRequest(text="x", sampling=common_pb2.SamplingParams(top_p=1.5))
                await _quietly(stub.Generate(bad))

        async def burst() -> None:  # more than max-in-flight + max-queue at once: RESOURCE_EXHAUSTED
            big = inference_pb2.GenerateRequest(text="Tell a long story.", sampling=sampling(64, ignore_eos=True))
            await asyncio.gather(*(_quietly(stub.Generate(big)) for _ in range(40)))

        await asyncio.gather(*(user(i) for i in range(concurrency)), bad_input(), burst())


async def drive_rollouts(router: str, seconds: float) -> None:
    """GRPO-style rollouts (math prompts, 4 samples each), every other one ending early by FIFO."""
    async with grpc.aio.insecure_channel(router) as channel:
        stub = rollout_pb2_grpc.RolloutStub(channel)
        deadline, r = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            r += 1
            prompts = [
                rollout_pb2.RolloutPrompt(
                    prompt_id=f"p{r}-{i}",
                    messages=rollout_pb2.ChatMessages(messages=chat(f"Compute {i} * {r}. Put it in \\boxed{{}}.")),
                    math=verifier_pb2.MathTask(references=[str(i * r)]),
                )
                for i in range(3)
            ]
            fifo = r % 2 == 1
            request = rollout_pb2.RolloutRequest(
                rollout_id=f"dash-{r}",
                prompts=prompts,
                samples_per_prompt=4,
                sampling=sampling(24),
                early_termination=rollout_pb2.EARLY_TERMINATION_POLICY_FIFO if fifo else 0,
                target_prompts=1 if fifo else 0,
            )
            await _quietly(stub.Rollout(request, timeout=60))


SQUARE = "```python\nn = int(input())\nprint(n * n)\n```"
WRONG = "```python\nn = int(input())\nprint(n + n)\n```"


async def drive_verifier(verifier: str, seconds: float) -> None:
    """Math answers and Python solutions, right and wrong, run in the verifier's sandbox."""
    tests = [verifier_pb2.CodeTest(stdin=f"{n}\n", expected_stdout=f"{n * n}\n") for n in (3, 5)]
    code = verifier_pb2.CodeTask(language="python", tests=tests)
    async with grpc.aio.insecure_channel(verifier) as channel:
        stub = verifier_pb2_grpc.VerifierStub(channel)
        deadline, r = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            r += 1
            tasks = [
                verifier_pb2.VerifyTask(
                    task_id=f"m{r}", response="</think> \\boxed{4}", math=verifier_pb2.MathTask(references=["4"])
                ),
                verifier_pb2.VerifyTask(
                    task_id=f"w{r}", response="</think> \\boxed{5}", math=verifier_pb2.MathTask(references=["4"])
                ),
                verifier_pb2.VerifyTask(task_id=f"c{r}", response=SQUARE, code=code),
                verifier_pb2.VerifyTask(task_id=f"x{r}", response=WRONG, code=code),
            ]
            await _quietly(stub.Verify(verifier_pb2.VerifyRequest(tasks=tasks), timeout=60))
            await asyncio.sleep(0.5)


async def drive_tokenizer(tokenizer: str, seconds: float) -> None:
    """A client of mimo.v1.Tokenizer (the router itself tokenizes in-process with the fetched files)."""
    async with grpc.aio.insecure_channel(tokenizer) as channel:
        stub = tokenizer_pb2_grpc.TokenizerStub(channel)
        deadline, r = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            r += 1
            texts = [f"The answer is {r % 2}.", "A shared prompt that the cache keeps."]
            await _quietly(stub.Tokenize(tokenizer_pb2.TokenizeRequest(texts=texts)))
            await _quietly(stub.CountTokens(tokenizer_pb2.CountTokensRequest(texts=texts)))
            request = tokenizer_pb2.ApplyChatTemplateRequest(messages=chat("hi"), add_generation_prompt=True)
            await _quietly(stub.ApplyChatTemplate(request))
            await asyncio.sleep(0.3)
