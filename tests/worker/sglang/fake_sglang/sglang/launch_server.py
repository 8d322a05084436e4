"""A stand-in SGLang server for the launcher tests: `python -m sglang.launch_server <SGLang args>`.

It serves HealthCheck, GetModelInfo, GetServerInfo, GetLoads, Generate (a token every FAKE_TOKEN_DELAY_S),
Abort and FlushCache (and, with FAKE_ADMIN_PORT, SGLang's HTTP `POST /update_weights_from_disk`), becomes healthy
after FAKE_STARTUP_S, and appends JSON events to FAKE_SGLANG_LOG: its argv and pid at start, and how many requests
were running when SIGTERM arrived. With --enable-metrics it serves `GET /metrics` as SGLang's gRPC-mode HTTP
sidecar does: on --host, port --grpc-http-sidecar-port (default --port + 1), OpenMetrics text, `sglang:*` names.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import grpc
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest
from smg_grpc_proto.generated import common_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc


def record(event: dict) -> None:
    with open(os.environ["FAKE_SGLANG_LOG"], "a") as f:
        f.write(json.dumps(event) + "\n")


def arg(name: str) -> str:
    return sys.argv[sys.argv.index(name) + 1]


METRICS = CollectorRegistry()
LABELS = ["model_name"]
PROMPT_TOKENS = Counter("sglang:prompt_tokens", "Number of prefill tokens processed.", LABELS, registry=METRICS)
RUNNING_REQS = Gauge("sglang:num_running_reqs", "The number of running requests.", LABELS, registry=METRICS)


class FakeScheduler(pb_grpc.SglangSchedulerServicer):
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.running: set[str] = set()

    async def HealthCheck(self, request, context):
        ready = time.monotonic() - self.started >= float(os.environ.get("FAKE_STARTUP_S", "0"))
        return pb.HealthCheckResponse(healthy=ready, message="ok" if ready else "loading")

    async def GetModelInfo(self, request, context):
        path = arg("--model-path")
        return pb.GetModelInfoResponse(
            model_path=path,
            tokenizer_path=path,
            served_model_name="fake",
            max_context_length=4096,
            vocab_size=1000,
            eos_token_ids=[2],
            is_generation=True,
        )

    async def GetServerInfo(self, request, context):
        return pb.GetServerInfoResponse(sglang_version="0.5.9-fake", server_type="grpc")

    async def GetLoads(self, request, context):
        load = pb.SchedulerLoad(num_running_reqs=len(self.running), max_total_num_tokens=1000, max_running_requests=8)
        return pb.GetLoadsResponse(dp_rank_count=1, loads=[load])

    async def Generate(self, request, context):
        self.running.add(request.request_id)
        PROMPT_TOKENS.labels("fake").inc(len(request.tokenized.input_ids))
        RUNNING_REQS.labels("fake").set(len(self.running))
        delay = float(os.environ.get("FAKE_TOKEN_DELAY_S", "0.01"))
        out: list[int] = []
        try:
            for i in range(request.sampling_params.max_new_tokens):
                await asyncio.sleep(delay)
                out.append(100 + i)
                if request.stream:
                    yield pb.GenerateResponse(
                        request_id=request.request_id,
                        chunk=pb.GenerateStreamChunk(
                            token_ids=[100 + i],
                            prompt_tokens=len(request.tokenized.input_ids),
                            completion_tokens=len(out),
                        ),
                    )
            yield pb.GenerateResponse(
                request_id=request.request_id,
                complete=pb.GenerateComplete(
                    output_ids=out,
                    finish_reason="length",
                    prompt_tokens=len(request.tokenized.input_ids),
                    completion_tokens=len(out),
                ),
            )
        finally:
            self.running.discard(request.request_id)
            RUNNING_REQS.labels("fake").set(len(self.running))

    async def Abort(self, request, context):
        return pb.AbortResponse(success=False)

    async def FlushCache(self, request, context):
        return common_pb2.FlushCacheResponse(success=True)


async def admin_app() -> web.AppRunner:
    """SGLang's HTTP admin API, the part the worker uses: POST /update_weights_from_disk (as documented)."""

    async def update(request: web.Request) -> web.Response:
        body = await request.json()
        record({"event": "update_weights_from_disk", **body})
        if not os.path.isdir(body["model_path"]):
            return web.json_response({"success": False, "message": f"no such model path {body['model_path']}"})
        return web.json_response(
            {"success": True, "message": "Succeeded to update model weights.", "num_paused_requests": 0}
        )

    app = web.Application()
    app.router.add_post("/update_weights_from_disk", update)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(os.environ["FAKE_ADMIN_PORT"])).start()
    return runner


async def metrics_sidecar() -> web.AppRunner | None:
    """SGLang's gRPC-mode sidecar: GET /metrics; a port it cannot bind is logged, not fatal (as in SGLang)."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(METRICS), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    flag = "--grpc-http-sidecar-port"
    port = int(arg(flag)) if flag in sys.argv else int(arg("--port")) + 1
    try:
        await web.TCPSite(runner, arg("--host"), port).start()
    except OSError as e:
        record({"event": "sidecar_failed", "error": str(e)})
        await runner.cleanup()
        return None
    return runner


async def main() -> None:
    record({"event": "start", "argv": sys.argv[1:], "pid": os.getpid()})
    server = grpc.aio.server()
    scheduler = FakeScheduler()
    pb_grpc.add_SglangSchedulerServicer_to_server(scheduler, server)
    server.add_insecure_port(f"{arg('--host')}:{arg('--port')}")
    await server.start()
    admin = await admin_app() if os.environ.get("FAKE_ADMIN_PORT") else None
    sidecar = await metrics_sidecar() if "--enable-metrics" in sys.argv else None
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    record({"event": "sigterm", "running": len(scheduler.running)})
    await server.stop(0)
    for runner in (admin, sidecar):
        if runner is not None:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
