"""Metrics (Prometheus, multi-process), structured logs, the per-request record they read, and the
ASGI middleware that fills it."""
