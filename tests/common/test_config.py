"""Flag parsing and target validation."""

import argparse

import pytest

from services.common.config import add_server_args, parse_target, server_settings


def test_env_fallback_is_read_at_parse_time(monkeypatch):
    parser = argparse.ArgumentParser()
    monkeypatch.setenv("MIMO_DEMO_LISTEN", "0.0.0.0:7000")
    add_server_args(parser, "demo", "127.0.0.1:1", 9999)
    settings = server_settings(parser.parse_args([]), "demo")
    assert settings.listen == "0.0.0.0:7000"
    assert settings.metrics_port == 9999
    assert server_settings(parser.parse_args(["--metrics-port", "-1"]), "demo").metrics_port is None


@pytest.mark.parametrize("value,expected", [("grpc://a:1", "a:1"), ("127.0.0.1:31000", "127.0.0.1:31000")])
def test_parse_target(value, expected):
    assert parse_target(value) == expected


@pytest.mark.parametrize("value", ["nohost", "grpc://h:", "h:99999", ":80"])
def test_parse_target_rejects_with_field_name(value):
    with pytest.raises(ValueError, match="workers"):
        parse_target(value, "workers")
