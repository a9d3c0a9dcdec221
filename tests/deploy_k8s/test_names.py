"""Object names and label values: valid for Kubernetes, distinct across tenants."""

from __future__ import annotations

import pytest

from aiservice.infrastructure.deploy.k8s_names import DNS_1035, LABEL_VALUE, label_value, object_name

AWKWARD = [
    ("acme", "fraud"),
    ("42-corp", "fraud"),  # a tenant id may start with a digit
    ("acme_eu", "fraud"),  # and hold underscores
    ("a" * 63, "m" + "x" * 62),  # both at their longest
]


@pytest.mark.parametrize(("tenant", "name"), AWKWARD)
def test_object_names_are_dns_1035_labels(tenant: str, name: str) -> None:
    result = object_name(tenant, name)
    assert len(result) <= 63 and DNS_1035.fullmatch(result), result


def test_an_object_name_reads_as_tenant_and_deployment() -> None:
    assert object_name("acme", "fraud").startswith("acme-fraud-")


def test_names_that_join_alike_stay_apart() -> None:
    assert object_name("a-b", "c") != object_name("a", "b-c")


def test_long_names_that_share_a_head_stay_apart() -> None:
    assert object_name("acme", "m" * 60 + "a") != object_name("acme", "m" * 60 + "b")


def test_the_same_deployment_always_gets_the_same_name() -> None:
    assert object_name("acme", "fraud") == object_name("acme", "fraud")


@pytest.mark.parametrize("text", ["acme", "acme-", "_x", "a" * 80, "acme eu/ß", "-"])
def test_label_values_are_valid(text: str) -> None:
    value = label_value(text)
    assert len(value) <= 63 and LABEL_VALUE.fullmatch(value), value


def test_a_valid_label_value_is_kept_as_it_is() -> None:
    assert label_value("0b6f1f8e-5c1d-4a57-9a8e-1d2f3c4b5a69") == "0b6f1f8e-5c1d-4a57-9a8e-1d2f3c4b5a69"
