"""Kubernetes operators of MiMo Serve."""
