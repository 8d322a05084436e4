"""The worker engines behind one protocol: torch (reference), sim (latency model), sglang (production)."""
