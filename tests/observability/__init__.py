"""Observability: traces, metrics, logs and health."""
