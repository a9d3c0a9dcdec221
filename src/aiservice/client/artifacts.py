"""Live models as artifact bytes in the formats the service loads safely (ADR 0005): scikit-learn as skops,
XGBoost as UBJSON, LightGBM as its text model, PyTorch as a ``torch.export`` program (or TorchScript as
it is), Keras as a ``.keras`` file. Never a pickle. Each framework is imported only when its object is met.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

# The service's framework names (its runtime plugins' names).
SKLEARN, XGBOOST, LIGHTGBM, PYTORCH, KERAS = "sklearn", "xgboost", "lightgbm", "pytorch", "keras"


def _modules(obj: Any) -> list[str]:
    """The modules of the object's class and of its bases (a subclass of nn.Module is still torch)."""
    return [str(getattr(kind, "__module__", "")) for kind in type(obj).__mro__]


def framework_of(obj: Any) -> str | None:
    """The framework a live model belongs to, from its class hierarchy; None when not one we know."""
    roots = {module.split(".", 1)[0] for module in _modules(obj)}
    for root, name in (
        ("xgboost", XGBOOST),  # before sklearn: its wrappers are sklearn estimators too
        ("lightgbm", LIGHTGBM),
        ("torch", PYTORCH),
        ("keras", KERAS),
        ("tf_keras", KERAS),
        ("sklearn", SKLEARN),
    ):
        if root in roots:
            return name
    return None


def serialise(obj: Any, framework: str | None = None, example_input: Any = None) -> tuple[str, bytes]:
    """``(filename, bytes)`` of a live model, in its framework's safe format.

    ``example_input`` is one batch (two rows or more) a PyTorch module is traced with; without it the
    input width is read from the module's first ``Linear`` layer. The batch dimension stays dynamic.
    """
    kind = framework or framework_of(obj)
    if kind == SKLEARN:
        import skops.io as sio

        return "model.skops", bytes(sio.dumps(obj))
    if kind == XGBOOST:
        booster = obj.get_booster() if hasattr(obj, "get_booster") else obj
        return "model.ubj", bytes(booster.save_raw(raw_format="ubj"))
    if kind == LIGHTGBM:
        booster = getattr(obj, "booster_", obj)
        return "model.txt", str(booster.model_to_string()).encode()
    if kind == PYTORCH:
        return _torch(obj, example_input)
    if kind == KERAS:
        with tempfile.TemporaryDirectory(prefix="aiservice-keras-") as folder:
            path = Path(folder) / "model.keras"
            obj.save(path)
            return "model.keras", path.read_bytes()
    raise TypeError(
        f"cannot tell how to save a {type(obj).__module__}.{type(obj).__name__}: pass framework= "
        "(sklearn, xgboost, lightgbm, pytorch, keras), or save it yourself and upload the file"
    )


def _torch(module: Any, example_input: Any) -> tuple[str, bytes]:
    import torch

    buffer = io.BytesIO()
    if isinstance(module, torch.jit.ScriptModule):
        torch.jit.save(module, buffer)
        return "model.pt", buffer.getvalue()
    example = _example(module, example_input)
    batch = torch.export.Dim("batch")
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, buffer)
    return "model.pt2", buffer.getvalue()


def _example(module: Any, example_input: Any) -> Any:
    import numpy as np
    import torch

    if example_input is not None:
        example = torch.as_tensor(np.asarray(example_input))
        if example.is_floating_point():
            example = example.float()
        if example.shape[0] < 2:  # torch.export specialises a batch of one
            example = torch.cat([example, example])
        return example
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear):
            return torch.zeros(2, layer.in_features)
    raise TypeError("pass example_input= (a batch of two rows or more) to export this PyTorch module")
