"""Helpers shared by the test folders, imported one way: `from tests.support.x import ...` (no sys.path edits).

tokenizer_dirs (fixture tokenizer directories + fixtures), router_stack (a sim stack behind a router),
fake_scheduler (a scripted in-process SglangScheduler), smg_peer (SMG as a peer), torch_engine (tiny torch
engines), autoscaler (operator emulators, Prometheus), chart / metric_names / live_stack (the Helm chart and
dashboards), sdk_api / sdk_fakes (the SDK against a fake server), sleepy_server, verifier_sandbox.
"""
