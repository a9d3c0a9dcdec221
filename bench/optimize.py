"""Model optimisation: artifact size and single-row latency before and after, for a torch MLP and for a
scikit-learn model through its ONNX compilation, with the accuracy change on held-out rows.

Each result is measured against its own baseline in the same run and printed as ratios (after /
before: below 1.0 is smaller or faster). It runs the service's own optimizer (``RuntimeOptimizer``)
in process, exactly what ``POST .../versions/{n}/optimize`` runs before registering the result:
- a PyTorch MLP (20 -> 256 -> 128 -> 2, trained 30 epochs) as a state_dict: dynamic INT8, 50%
  magnitude pruning and float16;
- a scikit-learn MLPClassifier (20 -> 128 -> 2) compiled to ONNX by the service's compiler, then
  ONNX Runtime dynamic INT8, static INT8 (calibrated on 200 rows) and float16 weights.

Latency is the median of single-row ``predict`` calls through the serving runtimes (in process, no
HTTP). Run: ``.venv/bin/python bench/optimize.py`` (``--quick``: fewer rows and calls).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from aiservice.application.optimization import OptimizationJob  # noqa: E402
from aiservice.application.ports import LoadSpec  # noqa: E402
from aiservice.domain.models import Framework  # noqa: E402
from aiservice.infrastructure.optimization.optimizer import RuntimeOptimizer  # noqa: E402
from aiservice.infrastructure.runtimes.onnx_compile import compile_request  # noqa: E402
from aiservice.infrastructure.runtimes.registry import FrameworkRegistry  # noqa: E402

HIDDEN = [256, 128]


def data(rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=20, n_informative=10, random_state=0)
    x = x.astype(np.float32)
    cut = rows * 4 // 5
    return x[:cut], y[:cut], x[cut:], y[cut:]


def torch_artifact(folder: Path, x: np.ndarray, y: np.ndarray) -> tuple[Path, dict[str, Any]]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 2))
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(30):
        for start in range(0, len(x), 256):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(
                module(inputs[start : start + 256]), targets[start : start + 256]
            )
            loss.backward()
            optimizer.step()
    path = folder / "weights.pt"
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    path.write_bytes(buffer.getvalue())
    architecture = {"type": "mlp", "inputSize": 20, "hiddenSizes": HIDDEN, "outputSize": 2}
    return path, {"architecture": architecture, "task": "classification"}


def sklearn_onnx(folder: Path, x: np.ndarray, y: np.ndarray) -> tuple[Path, dict[str, Any]]:
    import skops.io as sio
    from sklearn.neural_network import MLPClassifier

    estimator = MLPClassifier((128,), max_iter=300, random_state=0).fit(x, y)
    native = folder / "model.skops"
    native.write_bytes(sio.dumps(estimator))
    out = folder / "compiled.onnx"
    report = compile_request(
        {"framework": "sklearn", "filename": "model.skops", "path": str(native), "out": str(out)}
    )
    if not report.get("kept"):
        raise SystemExit(f"the sklearn model was not compiled: {report.get('reason')}")
    return out, dict(report.get("configuration") or {})


def run(
    optimizer: RuntimeOptimizer,
    label: str,
    framework: Framework,
    source: Path,
    configuration: dict[str, Any],
    rows: tuple[np.ndarray, np.ndarray],
    calls: int,
    method: str,
    mode: str = "dynamic",
) -> None:
    x, y = rows
    with tempfile.TemporaryDirectory() as out:
        outcome = optimizer.optimize(
            OptimizationJob(
                method=method,
                mode=mode,
                framework=framework,
                source=source,
                spec=LoadSpec(framework, source.name, configuration=configuration),
                rows=x.tolist(),
                labels=y.tolist(),
                task="classification",
                sparsity=0.5,
                calibration_rows=x[:200].tolist(),
                latency_calls=calls,
                out_dir=Path(out),
            )
        )
    r = outcome.report
    name = f"{label} {method}" + (f" ({mode})" if method == "quantization" else "")
    print(
        f"{name:<42} size {r['sizeBytesBefore']:>9,} -> {r['sizeBytesAfter']:>9,} B  x{r['sizeRatio']:<6.3f}"
        f" latency {r['latencyUsBefore']:>7.1f} -> {r['latencyUsAfter']:>7.1f} us  x{r['latencyRatio']:<6.3f}"
        f" accuracy {r['accuracyBefore']:.4f} -> {r['accuracyAfter']:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4,000 rows and 300 timed calls")
    args = parser.parse_args()
    rows, calls = (4_000, 300) if args.quick else (20_000, 2_000)
    x_train, y_train, x_test, y_test = data(rows)
    held_out = (x_test, y_test)
    optimizer = RuntimeOptimizer(FrameworkRegistry.discover())
    print(f"{len(x_train)} training rows, {len(x_test)} held-out rows, median of {calls} single-row calls")
    with tempfile.TemporaryDirectory() as folder:
        weights, configuration = torch_artifact(Path(folder), x_train, y_train)
        torch_ = Framework("pytorch")
        for method in ("quantization", "pruning", "float16"):
            run(optimizer, "torch MLP", torch_, weights, configuration, held_out, calls, method)
        compiled, onnx_configuration = sklearn_onnx(Path(folder), x_train, y_train)
        for method, mode in (("quantization", "dynamic"), ("quantization", "static"), ("float16", "dynamic")):
            run(
                optimizer,
                "sklearn MLP (ONNX)",
                Framework.ONNX,
                compiled,
                onnx_configuration,
                held_out,
                calls,
                method,
                mode,
            )


if __name__ == "__main__":
    main()
