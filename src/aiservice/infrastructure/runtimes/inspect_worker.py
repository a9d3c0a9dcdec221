"""Child side of the artifact inspector: load once, try a prediction, report the signature.

The inspector forks a process that runs ``inspect_into``; ``python -m
aiservice.infrastructure.runtimes.inspect_worker`` (load spec as JSON on stdin) does the same by hand.
"""

from __future__ import annotations

import json
import resource
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiservice.application.ports import LoadSpec
from aiservice.domain.errors import DomainError
from aiservice.domain.models import Framework
from aiservice.infrastructure.runtimes.archives import ArchiveLimits
from aiservice.infrastructure.runtimes.registry import FrameworkRegistry
from aiservice.infrastructure.runtimes.trials import smoke_batch, with_nullability


def spec_request(
    artifact: Path, spec: LoadSpec, limits: ArchiveLimits | None = None, **extra: str
) -> dict[str, Any]:
    """A load spec (and the archive limits to load under) as the plain data a child process receives
    over its pipe."""
    return {
        "framework": spec.framework.value,
        "filename": spec.filename,
        "path": str(artifact),
        "allowPickle": spec.allow_pickle,
        "configuration": spec.configuration,
        "archiveLimits": (limits or ArchiveLimits()).to_json(),
        **extra,
    }


def spec_of(request: dict[str, Any]) -> LoadSpec:
    """The load spec a parent sent with ``spec_request``."""
    return LoadSpec(
        framework=Framework(request["framework"]),
        filename=request["filename"],
        allow_pickle=bool(request.get("allowPickle", False)),
        configuration=request.get("configuration", {}),
    )


def inspect(request: dict[str, Any]) -> dict[str, Any]:
    spec = spec_of(request)
    registry = FrameworkRegistry.discover(ArchiveLimits.from_json(request.get("archiveLimits")))
    model = registry.get(spec.framework).load(Path(request["path"]), spec)
    batch = smoke_batch(model.signature)
    if batch is not None:
        try:
            model.predict(batch)
        except Exception as exc:
            return {
                "error": {
                    "code": "invalid-artifact",
                    "detail": f"The model loaded but failed on a trial input of shape "
                    f"{list(batch.shape)}: {_first_line(exc)}",
                }
            }
    return {"signature": with_nullability(model).to_json()}


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def answer(request: dict[str, Any]) -> dict[str, Any]:
    try:
        return inspect(request)
    except DomainError as exc:
        return {"error": {"code": exc.code, "detail": exc.detail, "extra": exc.extra}}
    except Exception as exc:
        return {"error": {"code": "invalid-artifact", "detail": f"The artifact cannot be loaded: {exc}"}}


def inspect_into(request: dict[str, Any], sender: Connection) -> None:
    """Process target: answer one request over the pipe (plain JSON types only), with peak memory."""
    result = answer(request)
    result["peakRssBytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    sender.send(json.loads(json.dumps(result, default=str)))
    sender.close()


def main() -> None:
    sys.stdout.write(json.dumps(answer(json.loads(sys.stdin.read())), default=str))


if __name__ == "__main__":
    main()
