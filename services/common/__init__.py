"""Shared server runtime: settings, JSON logs, metrics, and the gRPC bootstrap every service uses."""
