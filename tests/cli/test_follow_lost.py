"""``train --follow`` when the service goes away mid-job: the SDK resumes the event stream a few times (after
the last event seen), then the command gives up with one line and status 3 instead of retrying forever.
The service here is a stand-in (httpx's MockTransport) so the connection can be cut at will."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from aiservice.client import Client
from aiservice.client import _follow as sdk_follow
from aiservice.interfaces.cli import client as cli_client
from aiservice.interfaces.cli.main import app

JOB = {"id": "6f1c1d2e-0000-4000-8000-000000000001", "modelId": "m-1", "status": "queued", "progress": 0.0}


class CutAfterOneEvent(httpx.SyncByteStream):
    def __iter__(self) -> Any:
        yield b'id: 1\nevent: progress\ndata: {"progress": 0.5, "epoch": 1, "epochs": 2}\n\n'
        raise httpx.ReadError("connection reset by peer")


def test_a_lost_event_stream_is_resumed_then_reported_as_unreachable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stream_calls: list[str | None] = []

    def service(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            stream_calls.append(request.headers.get("last-event-id"))
            if len(stream_calls) > 20:
                raise RuntimeError("the client keeps reconnecting to a service that is gone")
            if len(stream_calls) == 1:
                return httpx.Response(
                    200, stream=CutAfterOneEvent(), headers={"content-type": "text/event-stream"}
                )
            raise httpx.ConnectError("connection refused", request=request)
        if request.method == "GET" and request.url.path.endswith("/models"):
            return httpx.Response(200, json={"items": [], "nextCursor": None})
        if request.method == "POST" and request.url.path.endswith("/train"):
            return httpx.Response(202, json=JOB)
        return httpx.Response(404, json={"title": "Not found", "status": 404, "detail": request.url.path})

    def connected(url: str, *args: Any, **kwargs: Any) -> Client:
        made = Client(url, *args, **kwargs)
        made._http = httpx.Client(
            base_url=url, headers=made._http.headers, transport=httpx.MockTransport(service)
        )
        return made

    monkeypatch.setattr(cli_client, "Client", connected)
    monkeypatch.setattr(sdk_follow, "reconnect_delay", lambda failures: 0.0)
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps({"trainingConfig": {}, "datasetConfig": {}}))

    result = CliRunner().invoke(
        app,
        ["train", "m", "--config", str(config), "--follow", "--url", "http://svc.test", "--token", "t"],
        env={"AISERVICE_CONFIG": str(tmp_path / "none.toml"), "AISERVICE_URL": None, "AISERVICE_TOKEN": None},
    )
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("error: cannot reach the aiservice API at http://svc.test ")
    assert result.stderr.count("\n") == 1
    assert stream_calls == [None] + ["1"] * sdk_follow.RECONNECTS  # each retry resumes after event 1
