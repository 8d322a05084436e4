"""`mimo-serve operator` command line: tunables and peering settings built in main, not at import."""

from __future__ import annotations

import logging

import pytest

from operators.autoscaler.main import DEFAULT_PEERING, build_settings, parse_args


def test_defaults_are_peered_and_cluster_wide() -> None:
    config, options, _ = parse_args([])
    assert config.interval_s == 5.0 and config.prometheus_url.startswith("http://")
    assert options.namespaces == () and not options.is_standalone
    assert options.peering_name == DEFAULT_PEERING and options.priority > 0
    settings = build_settings(options)
    assert settings.peering.name == DEFAULT_PEERING and settings.peering.mandatory
    assert not settings.peering.standalone and settings.posting.level == logging.WARNING


def test_flags_reach_the_config() -> None:
    argv = ["--namespace", "a", "--namespace", "b", "--prometheus-url", "http://p:9090", "--interval-s", "2"]
    argv += ["--standalone", "--priority", "7", "--peering", "other", "--metrics-port", "0"]
    config, options, _ = parse_args(argv)
    assert (config.prometheus_url, config.interval_s) == ("http://p:9090", 2.0)
    assert options.namespaces == ("a", "b") and options.priority == 7 and options.metrics_port == 0
    settings = build_settings(options)
    assert settings.peering.standalone and not settings.peering.mandatory and settings.peering.name == "other"


def test_random_priorities_differ_between_processes() -> None:
    priorities = {parse_args([])[1].priority for _ in range(5)}
    assert len(priorities) > 1  # equal priorities would freeze every peer


def test_bad_interval_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--interval-s", "0"])
