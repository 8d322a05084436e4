"""Stand-in for the sglang package in tests: only `python -m sglang.launch_server` exists."""

__version__ = "0.5.9"
