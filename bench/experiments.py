"""Experiment routing benchmark: what routing a prediction by a running experiment costs.

Two measurements, in this process:

1. The routing step alone: ``ExperimentTraffic.assign`` (the snapshot lookup by tenant and model, the
   routing key read from a header, the weighted rendezvous hash) plus the arm's cached route lookup
   (``VersionRouter.resolve`` of ``model:version``, a dictionary hit), against the no-experiment path
   (the snapshot lookup that finds nothing); and the same step with what a routed prediction adds
   after the answer (``observed``: the arm named in the result, the observation queued). The
   snapshot holds ``--experiments`` running experiments of as many tenants and models; each timing
   is one call, ``--calls`` of them, so p99 is honest. The overhead is given two ways: the
   difference of the p99s, and the p99 of the per-call differences (each call paired with the
   no-experiment call measured next to it).
2. End to end: ``POST /models/{name}/predict`` through the whole app (``create_app`` on a SQLite
   database, in-process ASGI transport, seeded scikit-learn models of two versions each): a model
   without an experiment and one with a running A/B experiment (sticky by ``X-User-Id``), their
   requests alternating so both paths share the warm-up and the noise.

It prints p50/p99/mean per path and the ratios, and the verdict against the target: the routing
overhead at p99 under 100 µs. Run it as ``.venv/bin/python bench/experiments.py`` (``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from aiservice.application.experimenting.recorder import ObservationRecorder
from aiservice.application.experimenting.traffic import ExperimentTraffic
from aiservice.application.serving.results import PredictionResult, PredictOptions
from aiservice.application.serving.routing import Route, VersionRouter
from aiservice.domain.errors import DomainError
from aiservice.domain.experiments import Arm, Experiment, ExperimentMode, KeySource, RoutingKeySpec
from aiservice.domain.models import Framework, Model, ModelVersion
from aiservice.domain.tenancy import Principal, Role

TARGET_US = 100.0
API = "/api/v1/ai"


class _Directory:
    def __init__(self, experiments: list[Experiment]) -> None:
        self._experiments = experiments

    def running(self) -> list[Experiment]:
        return self._experiments


class _NoStore:
    def write(self, observations: Any) -> None:
        return None


class _NoPredictor:
    """Never asked: the bench's experiments have no shadow arm."""

    async def predict_many(self, *args: Any, **kwargs: Any) -> list[PredictionResult | DomainError]:
        raise AssertionError("no shadow arm")


class _Targets:
    """Never asked: the bench's routes are in the router's cache already (the steady state)."""

    def serving_target(self, principal: Principal, reference: str) -> tuple[Model, ModelVersion, bool]:
        raise AssertionError("the routes are cached")


def _experiment(index: int) -> Experiment:
    now = datetime.now(UTC)
    experiment = Experiment.create(
        tenant_id=f"t{index}",
        name=f"e{index}",
        model_id=f"m{index}",
        mode=ExperimentMode.AB,
        arms=[Arm("A", 1, 1.0), Arm("B", 2, 1.0)],
        now=now,
        routing_key=RoutingKeySpec(KeySource.HEADER, "x-user-id"),
    )
    experiment.start(now)
    return experiment


def _summary(name: str, samples_ns: list[int]) -> dict[str, float]:
    data = np.asarray(samples_ns, dtype=float) / 1000.0
    return {
        "path": name,  # type: ignore[dict-item]
        "p50": float(np.percentile(data, 50)),
        "p99": float(np.percentile(data, 99)),
        "mean": float(data.mean()),
    }


def _row(figures: dict[str, Any], unit: str = "µs") -> str:
    p50, p99, mean = figures["p50"], figures["p99"], figures["mean"]
    return f"{figures['path']:<44} {p50:>10.2f} {p99:>10.2f} {mean:>10.2f} {unit}"


async def routing_step(
    experiments: int, calls: int
) -> tuple[dict[str, float], dict[str, float], dict[str, float], np.ndarray, np.ndarray]:
    from starlette.datastructures import Headers

    traffic = ExperimentTraffic(
        _Directory([_experiment(i) for i in range(experiments)]), ObservationRecorder(_NoStore())
    )
    traffic.refresh()
    tenant = f"t{experiments // 2}"
    principal = Principal("bench", tenant, frozenset({Role.ADMIN}))
    now = datetime.now(UTC)
    model = Model(tenant, "bench", Framework("sklearn"), now, now, id=f"m{experiments // 2}")
    router = VersionRouter(_Targets())
    for selector in (":1", ":2"):  # both arms resolved before: the steady state is a cache hit
        route = Route(model, None, False, "native")  # type: ignore[arg-type]  # the version is never read
        router._routes[(tenant, "bench", selector)] = (math.inf, route)
    routed: list[int] = []
    observed: list[int] = []
    bare: list[int] = []
    payloads: list[Any] = [{"features": [0.0] * 20}]
    for user in range(calls):
        options = PredictOptions(headers=Headers({"x-user-id": f"user-{user % 5000}"}))
        started = time.perf_counter_ns()
        assignment = traffic.assign(tenant, model.id, "bench", options, payloads)
        assert assignment is not None
        await router.resolve(principal, "bench", assignment.selector)
        routed.append(time.perf_counter_ns() - started)
        started = time.perf_counter_ns()
        missing = traffic.assign(tenant, "no-experiment", "bench", options, payloads)
        bare.append(time.perf_counter_ns() - started)
        assert missing is None
        answer: list[PredictionResult | DomainError] = [PredictionResult(1, model.id, 1, 0.5)]
        started = time.perf_counter_ns()
        assignment = traffic.assign(tenant, model.id, "bench", options, payloads)
        assert assignment is not None
        await router.resolve(principal, "bench", assignment.selector)
        traffic.observed(
            _NoPredictor(), principal, "bench", payloads, options, "input", assignment, answer, 0.5
        )
        observed.append(time.perf_counter_ns() - started)
        if user % 10_000 == 9_999:
            traffic.recorder.flush()  # the background writer's job, outside the timings
    paired_routed = np.asarray(routed, dtype=float) - np.asarray(bare, dtype=float)
    paired_observed = np.asarray(observed, dtype=float) - np.asarray(bare, dtype=float)
    return (
        _summary("routing step, running experiment", routed),
        _summary("routing + observing, running experiment", observed),
        _summary("routing step, no experiment", bare),
        paired_routed / 1000.0,
        paired_observed / 1000.0,
    )


def end_to_end(requests: int) -> tuple[dict[str, float], dict[str, float]]:
    import skops.io as sio
    from fastapi.testclient import TestClient
    from sklearn.linear_model import LogisticRegression

    from aiservice.bootstrap import bootstrap
    from aiservice.infrastructure.observability.logging import configure_logging
    from aiservice.interfaces.http.app import create_app
    from aiservice.settings import Settings

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 20))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    artifacts = [bytes(sio.dumps(LogisticRegression(C=c, max_iter=300).fit(x, y))) for c in (1.0, 0.1)]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            database_url=f"sqlite:///{Path(tmp) / 'bench.db'}",
            data_dir=Path(tmp) / "data",
            jwt_secret="bench-secret-0123456789-0123456789-0123456789",
            onnx_compile=False,
            log_level="WARNING",
        )
        configure_logging("WARNING", "console")  # a line per request would be most of what is timed
        container = bootstrap(settings)
        container.prepare()  # migrations
        with TestClient(create_app(container)) as client:
            container.tenants.ensure("acme")
            token = container.tokens.issue("bench", "acme", ["admin"], 3600)
            headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "acme"}
            # "plain" and "bench" serve the same two versions; only "bench" runs an experiment. Their
            # requests alternate, so both paths see the same warm-up, noise and garbage collections.
            for name in ("plain", "bench"):
                client.post(f"{API}/models", json={"name": name, "framework": "sklearn"}, headers=headers)
                for artifact in artifacts:
                    files = {"file": ("m.skops", io.BytesIO(artifact), "application/octet-stream")}
                    uploaded = client.post(f"{API}/models/{name}/versions", files=files, headers=headers)
                    assert uploaded.status_code == 201, uploaded.text
            body = {"input": {"features": [0.1] * 20}}
            created = client.post(
                f"{API}/experiments",
                json={
                    "name": "bench",
                    "model": "bench",
                    "arms": [{"name": "A", "version": 1}, {"name": "B", "version": 2}],
                    "routingKey": {"header": "X-User-Id"},
                },
                headers=headers,
            ).json()
            assert client.post(f"{API}/experiments/{created['id']}/start", headers=headers).status_code == 200

            def call(model: str, user: int) -> int:
                started = time.perf_counter_ns()
                response = client.post(
                    f"{API}/models/{model}/predict", json=body, headers={**headers, "X-User-Id": f"u{user}"}
                )
                elapsed = time.perf_counter_ns() - started
                assert response.status_code == 200, response.text
                assert ("experiment" in response.json()) == (model == "bench")
                return elapsed

            for i in range(requests // 10):  # warm-up, not timed
                call("plain", i % 500)
                call("bench", i % 500)
            plain_ns, routed_ns = [], []
            for i in range(requests):
                first, second = ("plain", "bench") if i % 2 == 0 else ("bench", "plain")
                timings = {first: call(first, i % 500), second: call(second, i % 500)}
                plain_ns.append(timings["plain"])
                routed_ns.append(timings["bench"])
            container.experiments.recorder.flush()
            plain = _summary("/predict, no experiment", plain_ns)
            routed = _summary("/predict, running A/B experiment", routed_ns)
        container.close()
    return plain, routed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--experiments", type=int, default=1000, help="running experiments in the snapshot")
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=3000, help="end-to-end requests per path")
    args = parser.parse_args()
    calls, requests = (20_000, 400) if args.quick else (args.calls, args.requests)

    routed, observed, bare, paired, paired_observed = asyncio.run(routing_step(args.experiments, calls))
    print(f"\nRouting step ({calls} calls, {args.experiments} running experiments in the snapshot)")
    print(f"{'path':<44} {'p50':>10} {'p99':>10} {'mean':>10}")
    print(_row(routed))
    print(_row(observed))
    print(_row(bare))
    for name, figures, pairs in (
        ("routing", routed, paired),
        ("routing + observing", observed, paired_observed),
    ):
        overhead = figures["p99"] - bare["p99"]
        per_call = float(np.percentile(pairs, 99))
        worst = max(overhead, per_call)
        print(
            f"{name} overhead over the no-experiment path at p99: {overhead:.2f} µs (difference of p99s), "
            f"{per_call:.2f} µs (p99 of paired differences); target < {TARGET_US:g} µs: "
            + ("met" if worst < TARGET_US else "MISSED")
        )
        print(
            f"  ratio {name}/no-experiment: p50 {figures['p50'] / bare['p50']:.1f}x, "
            f"p99 {figures['p99'] / bare['p99']:.1f}x"
        )

    plain, with_experiment = end_to_end(requests)
    for figures in (plain, with_experiment):
        for key in ("p50", "p99", "mean"):
            figures[key] /= 1000.0  # ms
    print(f"\nEnd to end, in-process ASGI ({requests} requests per path, alternating, after a warm-up)")
    print(f"{'path':<44} {'p50':>10} {'p99':>10} {'mean':>10}")
    print(_row(plain, "ms"))
    print(_row(with_experiment, "ms"))
    e2e = (with_experiment["p99"] - plain["p99"]) * 1000
    print(
        f"ratio with/without experiment: p50 {with_experiment['p50'] / plain['p50']:.3f}x, "
        f"p99 {with_experiment['p99'] / plain['p99']:.3f}x ({e2e:+.0f} µs at p99; includes recording "
        "observations and the per-request noise of the in-process client)"
    )
    print(
        "the routing step's p50 as a share of the end-to-end p50: "
        f"{routed['p50'] / (plain['p50'] * 1000):.2%}"
    )


if __name__ == "__main__":
    main()
