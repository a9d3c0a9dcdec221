"""Kubernetes quantities, read the way Kubernetes reads them (its documentation's own examples)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from aiservice.domain.quantities import cpu_millicores, memory_bytes, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", Decimal(2)),
        ("500m", Decimal("0.5")),
        ("0.5", Decimal("0.5")),
        (".5", Decimal("0.5")),
        ("1.", Decimal(1)),
        ("4Gi", Decimal(4 * 2**30)),
        ("512Mi", Decimal(512 * 2**20)),
        ("128974848", Decimal(128974848)),
        ("129e6", Decimal(129_000_000)),
        ("129M", Decimal(129_000_000)),
        ("128974848000m", Decimal(128974848)),
        ("123Mi", Decimal(123 * 2**20)),
        ("1E", Decimal(10) ** 18),  # exa, not an exponent
        ("1E3", Decimal(1000)),  # an exponent
        ("1k", Decimal(1000)),
        ("1Ki", Decimal(1024)),
        ("100n", Decimal("1e-7")),
        ("+1", Decimal(1)),
        ("-1", Decimal(-1)),
    ],
)
def test_quantities_mean_what_kubernetes_says(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text", ["", "Gi", "4 Gi", "4gi", "4GB", "1.2.3", "0x10", "4Gib", "m", "1e", "nan", "1" * 70]
)
def test_what_is_not_a_quantity_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="Kubernetes quantity"):
        parse_quantity(text)


def test_cpu_is_millicores_rounded_up_like_kubernetes() -> None:
    assert cpu_millicores("2") == 2000
    assert cpu_millicores("500m") == 500
    assert cpu_millicores("0.0001") == 1  # Kubernetes' smallest CPU step is 1m
    assert cpu_millicores(1.5) == 1500
    assert cpu_millicores(4) == 4000
    for refused in ("0", "-1", "0m"):
        with pytest.raises(ValueError, match="more than 0"):
            cpu_millicores(refused)
    with pytest.raises(ValueError):
        cpu_millicores(float("inf"))


def test_memory_is_bytes_rounded_up() -> None:
    assert memory_bytes("8Gi") == 8 * 2**30
    assert memory_bytes("512Mi") == 512 * 2**20
    assert memory_bytes("1.5k") == 1500
    assert memory_bytes("1500m") == 2  # 1.5 bytes, up to a whole byte
    with pytest.raises(ValueError, match="more than 0"):
        memory_bytes("0")
