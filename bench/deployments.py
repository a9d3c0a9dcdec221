"""Deployment benchmark: a local deployment's stable endpoint against the service's own workers.

Starts a real ``aiservice serve`` (``--workers``, default: the CPUs this process may use) on a fresh
``DATA_DIR``, registers a seeded LogisticRegression (20 features, two versions), deploys it locally
with ``--replicas`` replicas, and drives both paths with ``wrk`` at 32 connections:

- ``/models/{name}/predict`` (the service's workers serve the model themselves: the direct path);
- ``/deployments/{name}/predict`` (the workers forward to the deployment's replicas).

Beside them, in the same run: MLServer (``bench/peers.py``, its default settings, the same model;
``--no-peer`` skips it) and the model's own ``predict`` on one row in this process (the ceiling no
server reaches). Then a rollout under load: ``wrk`` on the deployment while a ``PATCH`` moves it to
version 2; it reports the errors (the target is none), p99 during the rollout, and the time from the
``PATCH`` to all traffic on the new revision (every answer naming version 2).

Run it as ``.venv/bin/python bench/deployments.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import (
    API,
    CLASSES,
    SERVER_ENV,
    TENANT,
    LoadResult,
    Request,
    Server,
    free_port,
    input_schema,
    named_row,
    run_wrk,
    v2_single_body,
)

CONNECTIONS = 32
TARGET_RATIO = 0.8  # the deployment endpoint at least 0.8x the direct path
NAME = "bench-lr"
DEPLOYMENT = "bench-lr-prod"


@dataclass
class Figures:
    direct: LoadResult
    deployed: LoadResult
    peer: LoadResult | None
    ceiling_rps: float
    rollout: LoadResult | None = None
    switch_s: float = math.nan
    ready_s: float = math.nan


def build(workdir: Path) -> tuple[np.ndarray, list[Path], Any]:
    import skops.io as sio
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(n_samples=5000, n_features=20, random_state=0)
    paths = []
    first = None
    for version, c in enumerate((1.0, 0.5), start=1):
        estimator = LogisticRegression(C=c, max_iter=1000).fit(X, y)
        first = first or estimator
        path = workdir / f"lr-v{version}.skops"
        sio.dump(estimator, path)
        paths.append(path)
    return X.astype(np.float32), paths, first


def ceiling(estimator: Any, X: np.ndarray, seconds: float = 2.0) -> float:
    """One-row predictions per second of the estimator itself, in this process."""
    row = X[:1].astype(np.float64)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        estimator.predict(row)
        done += 1
    return done / (time.perf_counter() - started)


def register(c: httpx.Client, paths: list[Path]) -> None:
    body = {
        "name": NAME,
        "framework": "sklearn",
        "inputSchema": input_schema(),
        "outputSchema": {"classes": CLASSES},
    }
    c.post(f"{API}/models", json=body).raise_for_status()
    for path in paths:
        with path.open("rb") as f:
            c.post(f"{API}/models/{NAME}/versions", files={"file": (path.name, f)}).raise_for_status()
    c.post(f"{API}/models/{NAME}/versions/1/stage", json={"stage": "production"}).raise_for_status()


def wait_for(c: httpx.Client, check: Any, timeout_s: float = 300.0) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        shown = c.get(f"{API}/deployments/{DEPLOYMENT}").json()
        if check(shown):
            return time.perf_counter() - started
        if shown.get("status") in ("failed", "degraded") and shown.get("reason"):
            raise RuntimeError(f"deployment {shown['status']}: {shown['reason']}")
        time.sleep(0.1)
    raise RuntimeError(f"deployment not ready in {timeout_s:.0f} s: {shown}")


def measure_peer(workdir: Path, estimator: Any, X: np.ndarray, duration: int) -> LoadResult | None:
    from peers import MLServerPeer

    peer = MLServerPeer(workdir, {"lr": estimator}, free_port(), free_port())
    try:
        print(f"MLServer {peer.version}: starting (its venv is made on first use)...", flush=True)
        peer.start()
        request = Request(
            peer.infer_url("lr"), v2_single_body(X, "input-0"), {"Content-Type": "application/json"}
        )
        return run_wrk(workdir, "MLServer predict", request, peer.pids[0], CONNECTIONS, duration)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"MLServer could not start: {exc}", flush=True)
        return None
    finally:
        peer.stop()


def rollout_under_load(
    server: Server, c: httpx.Client, request: Request, duration: int
) -> tuple[LoadResult, float, float]:
    """wrk on the deployment while a PATCH rolls it to version 2; (load, PATCH to all traffic on
    version 2, PATCH to status available)."""
    result: dict[str, LoadResult] = {}
    load = threading.Thread(
        target=lambda: result.setdefault(
            "r",
            run_wrk(
                server.workdir,
                "deployment predict during rollout",
                request,
                server.pid,
                CONNECTIONS,
                duration,
            ),
        )
    )
    load.start()
    time.sleep(min(5.0, duration / 4))
    patched = time.perf_counter()
    c.patch(f"{API}/deployments/{DEPLOYMENT}", json={"version": 2}).raise_for_status()
    ready_s = wait_for(c, lambda d: d["status"] == "available" and d["serving"]["version"] == 2)
    switch_s = math.nan
    # Every answer from version 2, 20 in a row; watched past the load's end when the rollout is slow.
    while time.perf_counter() - patched < duration + 120:
        answers = [
            c.post(request.url, content=request.body, headers=request.headers).json() for _ in range(20)
        ]
        if all(a.get("version") == 2 for a in answers):
            switch_s = time.perf_counter() - patched
            break
        time.sleep(0.05)
    load.join()
    return result["r"], switch_s, ready_s


def cpu_per_request_us(r: LoadResult | None) -> float:
    """CPU the server's whole process tree (fronts, host worker and replicas) spent per request: on a
    host whose cores are all busy, throughput is the cores over this, so it explains the ratio."""
    if r is None or not r.ok or not r.requests:
        return math.nan
    return r.server_cpu_s / r.requests * 1e6


def row(label: str, r: LoadResult | None, ratio: float | None = None) -> str:
    if r is None or not r.ok:
        return f"| {label} | - | - | - | - | {r.problem if r else 'not run'} |"
    shown = f"{ratio:.2f}x" if ratio is not None and math.isfinite(ratio) else ""
    cpu = cpu_per_request_us(r)
    figures = f"{r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {cpu:,.0f}"
    return f"| {label} | {figures} | {r.errors} errors {shown} |"


def report(f: Figures, args: argparse.Namespace) -> str:
    ratio = f.deployed.rps / f.direct.rps if f.direct.ok and f.deployed.ok else math.nan
    lines = [
        f"## Deployments ({args.workers} workers, {args.replicas} replicas, {CONNECTIONS} connections, "
        f"{args.duration} s each, {os.cpu_count()} CPUs)",
        "",
        "| Path | req/s | p50 ms | p99 ms | server CPU us/request | notes |",
        "|---|---:|---:|---:|---:|---|",
        row("direct: /models/{name}/predict (the service's workers)", f.direct),
        row("deployment: /deployments/{name}/predict", f.deployed, ratio),
        row("peer: MLServer v2 infer, one row", f.peer),
        f"| ceiling: estimator.predict(one row) in process | {f.ceiling_rps:,.0f} | | | | one core |",
        "",
        f"Deployment vs direct: **{ratio:.2f}x** (target >= {TARGET_RATIO}x): "
        + ("met" if ratio >= TARGET_RATIO else "not met"),
    ]
    cpu_ratio = cpu_per_request_us(f.deployed) / cpu_per_request_us(f.direct)
    if math.isfinite(cpu_ratio):
        lines.append(
            f"CPU per request, deployment vs direct: {cpu_ratio:.2f}x (the front's hop and the replica's "
            f"own request handling; 0.8x throughput on busy cores needs at most {1 / TARGET_RATIO:.2f}x)"
        )
    if f.peer is not None and f.peer.ok and f.deployed.ok:
        lines.append(f"Deployment vs MLServer: {f.deployed.rps / f.peer.rps:.2f}x")
    if f.rollout is not None:
        lines += [
            "",
            "| Rollout under load | value |",
            "|---|---:|",
            f"| requests during the run | {f.rollout.requests:,} |",
            f"| failed requests (target: 0) | {f.rollout.errors} |",
            f"| p99 during the rollout, ms | {f.rollout.p99_ms:.2f} |",
            f"| PATCH -> status available with version 2, s | {f.ready_s:.2f} |",
            f"| PATCH -> all answers from version 2, s | {f.switch_s:.2f} |",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="3 s runs, no peer")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.no_peer = 3, True
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install -y wrk")
    workdir = Path(tempfile.mkdtemp(prefix="bench-deployments-"))
    X, paths, estimator = build(workdir)
    server = Server(workdir, workdir / "data", "aiservice", {**SERVER_ENV, "WORKERS": str(args.workers)})
    try:
        server.start()
        token = server.token()
        headers = {
            "Authorization": f"Bearer {token}",
            "X-Tenant-ID": TENANT,
            "Content-Type": "application/json",
        }
        with server.client(token) as c:
            register(c, paths)
            body = {
                "deploymentName": DEPLOYMENT,
                "minReplicas": args.replicas,
                "maxReplicas": args.replicas,
                "autoscaling": {"enabled": False},
            }
            c.post(f"{API}/models/{NAME}/deploy", json=body).raise_for_status()
            started = wait_for(
                c, lambda d: d["status"] == "available" and d["replicas"]["ready"] >= args.replicas
            )
            print(f"deployment available with {args.replicas} replicas in {started:.1f} s", flush=True)
            payload = json.dumps({"input": named_row(X[0])}).encode()
            direct = Request(f"{server.base_url}{API}/models/{NAME}/predict", payload, headers)
            deployed = Request(f"{server.base_url}{API}/deployments/{DEPLOYMENT}/predict", payload, headers)
            for request in (direct, deployed):  # warm both paths, and check they answer
                answer = httpx.post(request.url, content=request.body, headers=request.headers, timeout=30)
                answer.raise_for_status()
            print(f"wrk {args.duration}s: direct...", flush=True)
            direct_r = run_wrk(workdir, "direct predict", direct, server.pid, CONNECTIONS, args.duration)
            print(f"wrk {args.duration}s: deployment...", flush=True)
            deployed_r = run_wrk(
                workdir, "deployment predict", deployed, server.pid, CONNECTIONS, args.duration
            )
            figures = Figures(direct_r, deployed_r, None, ceiling(estimator, X))
            print(f"wrk {args.duration * 2}s: deployment during a rollout...", flush=True)
            figures.rollout, figures.switch_s, figures.ready_s = rollout_under_load(
                server, c, deployed, max(10, args.duration * 2)
            )
    finally:
        server.stop()
    if not args.no_peer:
        figures.peer = measure_peer(workdir, estimator, X, args.duration)
    print(report(figures, args))
    if args.keep:
        print(f"work folder: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
