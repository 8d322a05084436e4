"""A minimal service built on services/common for the runtime tests: CountTokens sleeps `total` ms."""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc
from mimo_client.v1 import tokenizer_pb2, tokenizer_pb2_grpc

from services.common.config import add_server_args, server_settings
from services.common.server import Service, run


class SleepyTokenizer(tokenizer_pb2_grpc.TokenizerServicer):
    async def CountTokens(self, request, context):
        if not request.texts:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "texts: must not be empty")
        delay_ms = int(request.texts[0])
        await asyncio.sleep(delay_ms / 1000)
        return tokenizer_pb2.CountTokensResponse(counts=[delay_ms], total=delay_ms)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_server_args(parser, "sleepy", "127.0.0.1:0", -1)
    settings = server_settings(parser.parse_args(argv), "sleepy")

    async def build() -> Service:
        return Service(
            register=lambda s: tokenizer_pb2_grpc.add_TokenizerServicer_to_server(SleepyTokenizer(), s),
            names=["mimo.v1.Tokenizer"],
        )

    return run(settings, build)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
