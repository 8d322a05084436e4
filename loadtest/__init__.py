"""Load tests of MiMo Serve over gRPC with locust: users, task sets, load shapes and SLO checks.

Importing this package imports nothing of locust: `loadtest.slo`, `loadtest.schedules` and `loadtest.workload`
are plain Python; `grpc_user`, `tasks`, `shapes`, `run` and `locustfile` need a gevent-patched locust process.
"""
