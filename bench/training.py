"""Training overhead: a job through the service against the same training done directly, same data.

Two workloads from the training issue, each measured both ways in this run:
- a scikit-learn RandomForest on 100,000 x 20 rows (CSV), 80/20 train/validation split;
- a PyTorch MLP for 5 epochs on the same rows (NPZ), batch 256, Adam.

"Direct" is what a user would write by hand: read the file, split, fit, score the held-out rows.
"Service" is a real ``aiservice serve`` (SQLite, local artifacts, ONNX compilation off, so only the
job is timed): the wall time from ``POST .../train`` until the job reads ``succeeded``, which
includes queueing, the worker process, reading and fingerprinting the data, evaluating through the
serving runtime and registering the version (with its isolated upload inspection).

The issue's target: service <= 1.10 x direct + 2 s. Run: ``.venv/bin/python bench/training.py``
(``--quick`` for 20,000 rows).
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RF_PARAMS = {"n_estimators": 50, "max_depth": 12, "random_state": 0}
MLP_HIDDEN = [64, 32]
EPOCHS, BATCH, LR = 5, 256, 1e-3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_data(folder: Path, rows: int) -> tuple[Path, Path]:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=20, n_informative=10, random_state=0)
    names = [f"f{i}" for i in range(20)]
    csv_path = folder / "train.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, "label"])
        writer.writerows([*map(float, row), int(t)] for row, t in zip(x, y, strict=True))
    npz_path = folder / "train.npz"
    np.savez(npz_path, X=x.astype(np.float32), y=y.astype(np.int64))
    return csv_path, npz_path


def direct_forest(csv_path: Path) -> tuple[float, float]:
    import pyarrow.csv as pacsv
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    started = time.perf_counter()
    table = pacsv.read_csv(csv_path)
    y = table.column("label").to_numpy()
    x = np.column_stack([table.column(f"f{i}").to_numpy() for i in range(20)]).astype(np.float32)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    model = RandomForestClassifier(**RF_PARAMS).fit(x_train, y_train)
    accuracy = float((model.predict(x_val) == y_val).mean())
    return time.perf_counter() - started, accuracy


def direct_mlp(npz_path: Path) -> tuple[float, float]:
    import torch
    from sklearn.model_selection import train_test_split

    started = time.perf_counter()
    data = np.load(npz_path)
    x_train, x_val, y_train, y_val = train_test_split(
        data["X"], data["y"], test_size=0.2, random_state=0, stratify=data["y"]
    )
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    width = 20
    for size in MLP_HIDDEN:
        layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
        width = size
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)),
        batch_size=BATCH,
        shuffle=True,
    )
    for _ in range(EPOCHS):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():  # a validation pass per epoch, as any training loop reports
            torch.nn.functional.cross_entropy(model(torch.from_numpy(x_val)), torch.from_numpy(y_val))
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_val)).argmax(1).numpy() == y_val).mean())
    return time.perf_counter() - started, accuracy


class Server:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "DB_", "JWT_"))},
            "DATA_DIR": str(folder / "var"),
            "ONNX_COMPILE": "false",
            "LOG_LEVEL": "WARNING",
        }
        self.folder = folder
        self.log = (folder / "server.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aiservice", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=folder,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"server did not start; see {folder / 'server.log'}")
            time.sleep(0.2)
        token = subprocess.run(
            [sys.executable, "-m", "aiservice", "token", "create", "--tenant", "default", "--role", "admin"],
            cwd=folder,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.client = httpx.Client(
            base_url=f"{self.url}/api/v1/ai",
            headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": "default"},
            timeout=60,
        )

    def train(self, name: str, model: dict[str, Any], body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        created = self.client.post("/models", json={"name": name, **model})
        created.raise_for_status()
        started = time.perf_counter()
        job = self.client.post(f"/models/{name}/train", json=body)
        if job.status_code != 202:
            raise SystemExit(f"train refused: {job.text}")
        job_id = job.json()["id"]
        while True:
            state: dict[str, Any] = self.client.get(f"/training-jobs/{job_id}").json()
            if state["status"] in ("succeeded", "failed", "cancelled"):
                return time.perf_counter() - started, state
            time.sleep(0.05)

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20,000 rows instead of 100,000")
    args = parser.parse_args()
    rows = 20_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory(prefix="aiservice-bench-training-") as tmp:
        folder = Path(tmp)
        datasets = folder / "var" / "datasets"
        datasets.mkdir(parents=True)
        print(f"writing {rows:,} x 20 rows...", flush=True)
        csv_path, npz_path = write_data(datasets, rows)
        print("direct: RandomForest...", flush=True)
        rf_direct, rf_direct_acc = direct_forest(csv_path)
        print("direct: PyTorch MLP...", flush=True)
        mlp_direct, mlp_direct_acc = direct_mlp(npz_path)
        server = Server(folder)
        try:
            print("service: RandomForest job...", flush=True)
            rf_service, rf_job = server.train(
                "forest",
                {"framework": "sklearn"},
                {
                    "trainingConfig": {
                        "algorithm": "sklearn.ensemble.RandomForestClassifier",
                        "params": RF_PARAMS,
                    },
                    "datasetConfig": {"trainPath": str(csv_path), "format": "csv", "target": "label"},
                },
            )
            print("service: PyTorch MLP job...", flush=True)
            mlp_service, mlp_job = server.train(
                "mlp",
                {"framework": "pytorch", "configuration": {"inputShape": [20], "task": "classification"}},
                {
                    "trainingConfig": {
                        "algorithm": "mlp",
                        "params": {"hiddenSizes": MLP_HIDDEN},
                        "epochs": EPOCHS,
                        "batchSize": BATCH,
                        "learningRate": LR,
                    },
                    "datasetConfig": {"trainPath": str(npz_path), "format": "npz"},
                },
            )
        finally:
            server.stop()
    print()
    header = (
        f"{'workload':<34}{'direct s':>10}{'service s':>11}{'ratio':>8}{'overhead s':>12}{'target s':>10}"
        "  verdict  accuracy (direct / service)"
    )
    print(
        f"Training through the service vs directly, {rows:,} x 20 rows, this machine ({os.cpu_count()} CPUs)"
    )
    print("-" * len(header))
    print(header)
    print("-" * len(header))
    for label, direct, service, job, direct_acc in (
        (
            f"RandomForest({RF_PARAMS['n_estimators']}, depth {RF_PARAMS['max_depth']}), CSV",
            rf_direct,
            rf_service,
            rf_job,
            rf_direct_acc,
        ),
        (f"PyTorch MLP {MLP_HIDDEN}, {EPOCHS} epochs, NPZ", mlp_direct, mlp_service, mlp_job, mlp_direct_acc),
    ):
        target = 1.10 * direct + 2.0
        ok = job["status"] == "succeeded" and service <= target
        accuracy = job["metrics"].get("validation_accuracy", float("nan"))
        status = (
            "ok" if ok else ("FAILED: " + str(job.get("error")) if job["status"] != "succeeded" else "MISSED")
        )
        print(
            f"{label:<34}{direct:>10.2f}{service:>11.2f}{service / direct:>8.2f}{service - direct:>12.2f}"
            f"{target:>10.2f}  {status:<7}  {direct_acc:.3f} / {accuracy:.3f}"
        )
    print("-" * len(header))
    print("target: service <= 1.10 x direct + 2 s (the issue's 10% plus 2 s of fixed start-up)")
    for label, job in (("RandomForest", rf_job), ("PyTorch MLP", mlp_job)):
        created, started, finished = (
            datetime.fromisoformat(job[k]) for k in ("createdAt", "startedAt", "finishedAt")
        )
        print(
            f"{label}: queued {(started - created).total_seconds():.2f} s, "
            f"running (worker, evaluation, registration) {(finished - started).total_seconds():.2f} s"
        )


if __name__ == "__main__":
    main()
