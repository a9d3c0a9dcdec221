"""The payload logging domain: a policy's checks, sampling by request id, feedback's checks."""

from __future__ import annotations

from typing import Any

import pytest

from aiservice.domain.errors import InvalidInput
from aiservice.domain.payload_logging import FeedbackInput, LoggingPolicy, sampled


def test_a_policy_takes_defaults_for_fields_left_out() -> None:
    assert LoggingPolicy.parse({}) == LoggingPolicy(enabled=True, sample_rate=1.0, retention_days=30)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"sampleRate": 0}, "body.sampleRate"),
        ({"sampleRate": True}, "body.sampleRate"),
        ({"sampleRate": float("nan")}, "body.sampleRate"),
        ({"retentionDays": 2.5}, "body.retentionDays"),
        ({"retentionDays": 3651}, "body.retentionDays"),
        ({"enabled": 1}, "body.enabled"),
        ({"rate": 0.5}, "body.rate"),
    ],
)
def test_a_bad_policy_names_its_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        LoggingPolicy.parse(raw)
    assert [e.field for e in raised.value.errors] == [field]


def test_sampling_is_deterministic_and_near_the_rate() -> None:
    ids = [f"request-{i}" for i in range(20_000)]
    chosen = [i for i in ids if sampled(i, 0.1)]
    assert chosen == [i for i in ids if sampled(i, 0.1)]
    assert 0.09 < len(chosen) / len(ids) < 0.11
    assert all(sampled(i, 1.0) for i in ids[:100])


def test_a_request_sampled_at_a_rate_is_sampled_at_every_higher_rate() -> None:
    ids = [f"r{i}" for i in range(2000)]
    assert {i for i in ids if sampled(i, 0.2)} <= {i for i in ids if sampled(i, 0.5)}


def test_feedback_needs_a_label_or_a_reward() -> None:
    assert FeedbackInput.parse("r", {"reward": 1}).reward == 1.0
    assert FeedbackInput.parse("r", {"label": [1, 2]}).has_label
    with pytest.raises(InvalidInput) as raised:
        FeedbackInput.parse("r", {"reward": float("inf")})
    assert [e.field for e in raised.value.errors] == ["body.reward"]
