"""The routing snapshot and the observation recorder without a database: stickiness, what is not
routed, a refresh that raced a change, and the bounded queue."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from aiservice.application.experimenting.ports import Observation
from aiservice.application.experimenting.recorder import ObservationRecorder
from aiservice.application.experimenting.traffic import ExperimentTraffic
from aiservice.application.serving.results import PredictOptions
from aiservice.domain.experiments import Arm, Experiment, ExperimentMode, KeySource, RoutingKeySpec

NOW = datetime(2026, 12, 7, tzinfo=UTC)


class FakeDirectory:
    def __init__(self, *experiments: Experiment) -> None:
        self.experiments = list(experiments)

    def running(self) -> list[Experiment]:
        return [e for e in self.experiments if e.active]


class FakeStore:
    def __init__(self) -> None:
        self.written: list[Observation] = []

    def write(self, observations: Sequence[Observation]) -> None:
        self.written.extend(observations)


def _experiment(weights: tuple[float, float] = (1.0, 1.0)) -> Experiment:
    experiment = Experiment.create(
        tenant_id="acme",
        name="e",
        model_id="m-1",
        mode=ExperimentMode.AB,
        arms=[Arm("A", "champion", weights[0]), Arm("B", 2, weights[1])],
        now=NOW,
        routing_key=RoutingKeySpec(KeySource.HEADER, "x-user-id"),
    )
    experiment.start(NOW)
    return experiment


def _traffic(*experiments: Experiment) -> ExperimentTraffic:
    traffic = ExperimentTraffic(FakeDirectory(*experiments), ObservationRecorder(FakeStore()))
    traffic.refresh()
    return traffic


def _options(user: str) -> PredictOptions:
    return PredictOptions(headers={"x-user-id": user})


def test_a_key_keeps_its_arm_and_the_arm_names_its_reference() -> None:
    traffic = _traffic(_experiment())
    first = traffic.assign("acme", "m-1", "iris", _options("u-1"), [{}])
    assert first is not None
    assert all(traffic.assign("acme", "m-1", "iris", _options("u-1"), [{}]) is first for _ in range(20))
    assert {first.selector, first.label["arm"]} in ({"@champion", "A"}, {":2", "B"})


def test_weights_split_keys_roughly_in_proportion() -> None:
    traffic = _traffic(_experiment((1.0, 3.0)))
    arms = [traffic.assign("acme", "m-1", "iris", _options(f"u-{i}"), [{}]) for i in range(4000)]
    share = sum(1 for a in arms if a is not None and a.arm == "B") / len(arms)
    assert 0.72 < share < 0.78


def test_pinned_references_other_models_and_tenants_are_not_routed() -> None:
    traffic = _traffic(_experiment())
    assert traffic.assign("acme", "m-1", "iris:1", _options("u"), [{}]) is None
    assert traffic.assign("acme", "m-1", "iris@champion", _options("u"), [{}]) is None
    assert traffic.assign("acme", "m-1", "iris", PredictOptions(version=1), [{}]) is None
    assert traffic.assign("acme", "m-2", "other", _options("u"), [{}]) is None
    assert traffic.assign("globex", "m-1", "iris", _options("u"), [{}]) is None


def test_following_a_stop_stops_routing_at_once() -> None:
    experiment = _experiment()
    traffic = _traffic(experiment)
    experiment.stop(NOW)
    traffic.follow(experiment)
    assert traffic.assign("acme", "m-1", "iris", _options("u"), [{}]) is None


def test_a_refresh_that_raced_a_change_is_dropped() -> None:
    experiment = _experiment()
    directory = FakeDirectory()  # the database does not show it running yet
    traffic = ExperimentTraffic(directory, ObservationRecorder(FakeStore()))
    original = directory.running

    def racing() -> list[Experiment]:
        found = original()
        traffic.follow(experiment)  # a start through this process commits meanwhile
        return found

    directory.running = racing  # type: ignore[method-assign]
    traffic.refresh()
    assert traffic.running("acme", "m-1") is experiment


def test_the_recorder_drops_and_counts_beyond_its_capacity() -> None:
    store = FakeStore()
    recorder = ObservationRecorder(store, capacity=3, batch_size=2)
    for i in range(5):
        recorder.observe(Observation("acme", "e", "A", f"r{i}", 1.0, False, 0, False, NOW))
    assert (recorder.dropped, recorder.flush()) == (2, 3)
    assert [o.request_id for o in store.written] == ["r0", "r1", "r2"]
