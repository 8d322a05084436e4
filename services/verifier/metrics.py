"""The verifier's Prometheus metrics (declared once, at import, in the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS_S

VERDICTS = Counter("mimo_verifier_verdicts", "Tasks scored, by kind (math|code) and verdict", ["kind", "verdict"])
TESTS = Counter("mimo_verifier_tests", "Code tests run, by language and status", ["language", "status"])
TASK_SECONDS = Histogram(
    "mimo_verifier_task_duration_seconds",
    "Time to score one task, queueing included",
    ["kind"],
    buckets=LATENCY_BUCKETS_S,
)
QUEUE_SECONDS = Histogram(
    "mimo_verifier_queue_seconds",
    "Time a task waited for a worker or a sandbox slot",
    ["kind"],
    buckets=LATENCY_BUCKETS_S,
)
POOL_BUSY = Gauge("mimo_verifier_pool_busy", "Workers (math) or sandboxes (code) in use", ["pool"])
POOL_CAPACITY = Gauge("mimo_verifier_pool_capacity", "Math worker processes, or concurrent sandboxes allowed", ["pool"])
POOL_QUEUED = Gauge("mimo_verifier_pool_queued", "Tasks waiting for a math worker or a sandbox slot", ["pool"])
MATH_RESTARTS = Counter(
    "mimo_verifier_math_worker_restarts", "Math workers replaced, by reason (hard_deadline|died|recycled)", ["reason"]
)
SANDBOX_ERRORS = Counter(
    "mimo_verifier_sandbox_errors", "Sandbox failures, by reason (start|runner_stopped)", ["reason"]
)
SANDBOX_ENABLED = Gauge("mimo_verifier_sandbox_enabled", "1 when code runs in the bubblewrap sandbox, 0 when unsafe")
PENDING_TASKS = Gauge("mimo_verifier_pending_tasks", "Tasks accepted and not yet scored")
