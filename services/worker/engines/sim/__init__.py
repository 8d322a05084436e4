"""The `sim` worker engine: a latency model of a MiMo-7B SGLang worker (see docs/workers.md)."""
