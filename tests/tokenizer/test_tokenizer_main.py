"""`mimo-serve tokenizer`: clear startup errors, and a real server process that answers and drains on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import grpc
from mimo_client.v1 import tokenizer_pb2, tokenizer_pb2_grpc

from services.common.net import free_port
from services.tokenizer.__main__ import main, resolve_model_dir


def test_missing_model_dir_is_a_clear_startup_error(tmp_path: Path, capsys):
    assert main(["--model", str(tmp_path / "missing"), "--metrics-port", "-1"]) == 2
    err = capsys.readouterr().err
    assert f"model directory {tmp_path / 'missing'} does not exist" in err and "tokenizer.json" in err


def test_relative_model_dir_falls_back_to_the_repository(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir("services/tokenizer") == Path(__file__).resolve().parents[2] / "services/tokenizer"
    assert resolve_model_dir("elsewhere") == Path("elsewhere")


def test_cli_serves_the_directory_and_drains_on_sigterm(fixture_dir: Path):
    port = free_port()
    cmd = [sys.executable, "-m", "services.cli", "tokenizer", "--model", str(fixture_dir)]
    cmd += ["--listen", f"127.0.0.1:{port}", "--metrics-port", "-1", "--grace-s", "1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
            stub = tokenizer_pb2_grpc.TokenizerStub(channel)
            info = stub.GetTokenizerInfo(tokenizer_pb2.GetTokenizerInfoRequest(), timeout=10, wait_for_ready=True)
        assert info.model == fixture_dir.name and info.vocab_size > 256
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert "tokenizer loaded" in (proc.stderr.read() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
