"""Reachability probes for the health report: a TCP connection to a backend's address.

A connection (not a protocol round trip) is enough to tell "down" from "up" for every backend the
service can be configured with, without importing its client library on the health path.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from aiservice.application.health import Probe

DEFAULT_PORTS = {"redis": 6379, "nats": 4222, "kafka": 9092, "ray": 6379}


def tcp_probe(address: str, default_port: int, timeout_s: float = 1.0) -> Probe:
    """A probe that connects to ``address`` (``host:port``, ``scheme://host:port``, or a comma list,
    of which the first is tried)."""
    first = address.split(",")[0].strip()
    parts = urlsplit(first if "://" in first else f"tcp://{first}")
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port

    def probe() -> None:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass

    return probe


def dependency_probes(
    *,
    redis: str | None,
    event_bus: str,
    nats_url: str,
    kafka_broker: str,
    ray_address: str | None,
    job_runner: str,
    probe: Callable[[str, int], Probe] = tcp_probe,
) -> tuple[dict[str, Probe], str | None, tuple[str, ...]]:
    """(probes by name, the broker's name or None, the backends that are not configured)."""
    probes: dict[str, Probe] = {}
    if redis:
        probes["redis"] = probe(redis, DEFAULT_PORTS["redis"])
    broker_address = {"redis": redis, "nats": nats_url, "kafka": kafka_broker}.get(event_bus)
    broker = None
    if broker_address:
        broker = "broker"
        probes[broker] = probe(broker_address, DEFAULT_PORTS[event_bus])
    if job_runner == "ray":
        probes["ray"] = probe(ray_address or "127.0.0.1", DEFAULT_PORTS["ray"])
    absent = (*(name for name in ("redis", "broker", "ray") if name not in probes), "kubernetes")
    return probes, broker, absent
