"""The exact SGLang command for MiMo-7B-RL, and the install checks that guard it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from services.worker.engines.sglang.launcher import SglangSetupError, check_versions, installed_versions
from services.worker.engines.sglang.profile import SglangProfile, build_command, load_sglang_profile

MIMO = "/models/XiaomiMiMo/MiMo-7B-RL"
FAKE_SGLANG = Path(__file__).parent / "fake_sglang"


def mimo_profile(**changes) -> SglangProfile:
    return SglangProfile(
        model_path=MIMO,
        served_model_name="MiMo-7B-RL",
        mem_fraction_static=0.7,
        context_length=32768,
        python="python3",
        **changes,
    )


def test_mimo_7b_rl_command_with_mtp() -> None:
    assert build_command(mimo_profile(), "127.0.0.1", 30001) == [
        "python3", "-m", "sglang.launch_server",
        "--model-path", MIMO, "--host", "127.0.0.1", "--port", "30001", "--grpc-mode",
        "--trust-remote-code", "--tp-size", "1",
        "--mem-fraction-static", "0.7", "--context-length", "32768", "--served-model-name", "MiMo-7B-RL",
        "--enable-metrics",
        "--speculative-algorithm", "EAGLE", "--speculative-num-steps", "1",
        "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", "2",
    ]  # fmt: skip


def test_mimo_7b_rl_command_without_mtp_and_with_extra_args() -> None:
    profile = mimo_profile(is_mtp_enabled=False, tp_size=2, extra_args=("--cuda-graph-max-bs", "8"))
    assert build_command(profile, "127.0.0.1", 30001) == [
        "python3", "-m", "sglang.launch_server",
        "--model-path", MIMO, "--host", "127.0.0.1", "--port", "30001", "--grpc-mode",
        "--trust-remote-code", "--tp-size", "2",
        "--mem-fraction-static", "0.7", "--context-length", "32768", "--served-model-name", "MiMo-7B-RL",
        "--enable-metrics",
        "--cuda-graph-max-bs", "8",
    ]  # fmt: skip


def test_profile_refuses_relative_paths_and_launcher_owned_flags(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="absolute"):
        SglangProfile(model_path="models/MiMo")
    with pytest.raises(ValueError, match="--port"):
        mimo_profile(extra_args=("--port", "1"))
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"model_path": MIMO, "tp_size": 4, "bogus": 1}))
    with pytest.raises(ValueError, match="bogus"):
        load_sglang_profile(path)


def test_profile_file_with_flag_overrides(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"_comment": "prod", "model_path": MIMO, "tp_size": 4, "is_mtp_enabled": True}))
    profile = load_sglang_profile(path, is_mtp_enabled=False, context_length=8192)
    assert (profile.tp_size, profile.is_mtp_enabled, profile.context_length) == (4, False, 8192)


def test_missing_sglang_names_the_version_needed() -> None:
    versions = installed_versions(sys.executable)  # the dev venv has no sglang
    assert versions["sglang"] is None
    with pytest.raises(SglangSetupError, match=r"sglang>=0\.5\.4"):
        check_versions(versions, mimo_profile())


def test_too_old_sglang_names_the_version_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sglang-0.4.6.dist-info").mkdir()
    (tmp_path / "sglang-0.4.6.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sglang\nVersion: 0.4.6\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    versions = installed_versions(sys.executable)
    assert versions["sglang"] == "0.4.6"
    with pytest.raises(SglangSetupError, match=r"0\.4\.6 is too old.*sglang>=0\.5\.4"):
        check_versions(versions, mimo_profile())


def test_old_servicer_with_metrics_is_refused_but_fine_without_metrics() -> None:
    versions = {"sglang": "0.5.13", "smg-grpc-servicer": "0.5.4"}
    with pytest.raises(SglangSetupError, match=r"smg-grpc-servicer>=0\.5\.5"):
        check_versions(versions, mimo_profile())
    check_versions(versions, mimo_profile(is_metrics_enabled=False))
    check_versions({"sglang": "0.5.9", "smg-grpc-servicer": None}, mimo_profile())


def test_stand_in_sglang_is_found_as_a_supported_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(FAKE_SGLANG))
    check_versions(installed_versions(sys.executable), mimo_profile())
