"""The WorkerLauncher contract, for every launcher: a process on this machine (``ProcessLauncher``) and a
task on a Ray cluster (``RayLauncher``). A worker runs its job to the end and hands the model back; a job
that fails says why; a worker that is stopped is gone, its process too; a worker that dies (the OOM
killer, a segfault) is seen to have ended, with the reason, rather than waited on for ever; ``start`` and
``stop`` may be called again.

The jobs are what the supervisor hands a launcher: a logistic regression on iris, a dataset that is not
there, and one that never arrives (an image that is a named pipe nobody writes to: the worker blocks
opening it, alive and idle, until it is stopped or killed). Ray runs on a head the module starts
(``tests.ray_cluster``), some 30 s for the module on two cores."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aiservice.domain.training import DatasetConfig, ResourceConfig, TrainingConfig
from aiservice.infrastructure.jobs.local import ProcessLauncher
from aiservice.infrastructure.jobs.ray_runner import RayLauncher
from aiservice.infrastructure.jobs.supervisor import WorkerHandle, WorkerLauncher
from tests.api.test_training import IRIS_FEATURES, training_workers, write_iris_csv
from tests.events.brokers import skip_or_fail
from tests.helpers import wait_until
from tests.ray_cluster import RayCluster
from tests.ray_cluster import ray_cluster as ray_cluster  # the module's Ray head

pytestmark = pytest.mark.xdist_group("ray")  # one Ray head at a time on the machine


@dataclass
class Launcher:
    """A launcher under test, and how a test sees the processes that run its jobs."""

    launcher: WorkerLauncher
    workers: Callable[[], set[int]]  # the PIDs of the processes running a job now
    stopped: str  # what exit_reason says of a worker that was stopped
    crashed: str  # and of one whose process died


@pytest.fixture(scope="module", params=["local", "ray"])
def launcher(request: pytest.FixtureRequest) -> Iterator[Launcher]:
    if request.param == "local":
        subject = Launcher(ProcessLauncher(), training_workers, "killed by signal 15", "killed by signal 9")
    else:
        try:
            import ray  # noqa: F401
        except ImportError:
            skip_or_fail("Ray is not installed: pip install -e '.[ray]'")
        cluster: RayCluster = request.getfixturevalue("ray_cluster")
        launcher = RayLauncher(cluster.address)
        subject = Launcher(launcher, cluster.job_processes, "TaskCancelledError", "WorkerCrashedError")
    subject.launcher.start()
    yield subject
    subject.launcher.stop()


@dataclass
class Jobs:
    """Launches jobs as the supervisor does, and ends whatever a test left running."""

    launcher: WorkerLauncher
    root: Path
    launched: list[WorkerHandle] = field(default_factory=list)

    def launch(self, train: Path, format: str = "csv") -> tuple[WorkerHandle, Path]:
        folder = self.root / f"job-{len(self.launched)}"
        folder.mkdir()
        self.launched.append(self.launcher.launch(job_request(folder, train, format), folder))
        return self.launched[-1], folder

    def close(self) -> None:
        for worker in self.launched:
            worker.kill()
            worker.close()


@pytest.fixture
def jobs(launcher: Launcher, tmp_path: Path) -> Iterator[Jobs]:
    launcher.launcher.start()  # again: a test may have stopped it
    started = Jobs(launcher.launcher, tmp_path)
    yield started
    started.close()


def job_request(folder: Path, train: Path, format: str) -> dict[str, Any]:
    """What the supervisor hands a launcher: a logistic regression on ``train``."""
    features = [{"name": name, "type": "number"} for name in IRIS_FEATURES]
    target = "species" if format == "csv" else None
    training = TrainingConfig("sklearn.linear_model.LogisticRegression", {"max_iter": 200})
    return {
        "jobId": uuid.uuid4().hex,
        "framework": "sklearn",
        "configuration": {},
        "inputSchema": {"type": "tabular", "features": features},
        "outputSchema": None,
        "training": training.to_json(),
        "dataset": DatasetConfig(train_path=str(train), format=format, target=target).to_json(),
        "resources": ResourceConfig().to_json(),
        "gpu": "none",
        "threads": 1,
        "outDir": str(folder),
        "storageOptions": {},
    }


def never_arriving(root: Path) -> Path:
    """An image folder whose one image is a named pipe: reading it waits for a writer that never comes."""
    (root / "images" / "cat").mkdir(parents=True)
    os.mkfifo(root / "images" / "cat" / "a.png")
    return root / "images"


def run_to_end(worker: WorkerHandle, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every message of a worker, once it has ended."""
    messages: list[dict[str, Any]] = []

    def ended() -> bool:
        messages.extend(worker.receive())
        return not worker.alive()

    wait_until(ended, timeout, 0.1, "the worker to end")
    messages.extend(worker.receive())  # what it said between the last look and its end
    return messages


def running(launcher: Launcher, worker: WorkerHandle) -> set[int]:
    """The processes of a worker that waits for its data."""
    pids = wait_until(launcher.workers, what="the worker's process")
    assert worker.alive()
    return pids


def test_a_worker_runs_its_job_to_the_end_and_hands_the_model_back(jobs: Jobs, tmp_path: Path) -> None:
    worker, folder = jobs.launch(write_iris_csv(tmp_path / "iris.csv"))
    messages = run_to_end(worker)
    assert [m["type"] for m in messages[:-1]] == ["progress"] * (len(messages) - 1)
    done = messages[-1]
    assert done["type"] == "done", done
    artifact = Path(done["artifact"])
    assert artifact.parent == folder and artifact.is_file()  # here, wherever the job ran
    assert done["metrics"]["validation_accuracy"] > 0.8
    worker.kill()  # the supervisor kills each worker it forgets: a no-op once it has ended
    worker.close()
    worker.close()
    assert not worker.alive()


def test_a_job_that_fails_says_why_and_its_worker_ends(jobs: Jobs, tmp_path: Path) -> None:
    worker, _ = jobs.launch(tmp_path / "missing.csv")
    (failed,) = run_to_end(worker)
    assert (failed["type"], failed["stage"]) == ("failed", "dataset")
    assert "missing.csv" in failed["message"]


def test_a_stopped_worker_is_gone_with_its_process(launcher: Launcher, jobs: Jobs, tmp_path: Path) -> None:
    worker, _ = jobs.launch(never_arriving(tmp_path), "imagefolder")
    pids = running(launcher, worker)
    worker.kill()
    wait_until(lambda: not worker.alive(), 15, what="the stopped worker to end")
    wait_until(lambda: not pids & launcher.workers(), 15, what="its process to go")
    assert worker.receive() == []
    assert launcher.stopped in worker.exit_reason()


def test_a_worker_whose_process_dies_is_seen_to_have_ended_with_the_reason(
    launcher: Launcher, jobs: Jobs, tmp_path: Path
) -> None:
    worker, _ = jobs.launch(never_arriving(tmp_path), "imagefolder")
    for pid in running(launcher, worker):
        os.kill(pid, signal.SIGKILL)  # as the OOM killer or a segfault would end it
    wait_until(lambda: not worker.alive(), 30, what="the dead worker to be seen as ended")
    assert worker.receive() == []  # no result: the supervisor fails the job as "crashed"
    assert launcher.crashed in worker.exit_reason()


def test_start_and_stop_may_be_called_again(launcher: Launcher, jobs: Jobs, tmp_path: Path) -> None:
    launcher.launcher.start()
    launcher.launcher.start()
    launcher.launcher.stop()
    launcher.launcher.stop()
    launcher.launcher.start()  # and it launches again
    worker, _ = jobs.launch(tmp_path / "missing.csv")
    assert [m["type"] for m in run_to_end(worker)] == ["failed"]
