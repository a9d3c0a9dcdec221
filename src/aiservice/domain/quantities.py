"""Kubernetes resource quantities, as the product spec and Kubernetes users write CPU and memory:
``"2"``, ``"500m"``, ``"1.5"``, ``"4Gi"``, ``"512Mi"``, ``"129M"``, ``"1e3"``.

Parsed exactly (``Decimal``) with Kubernetes' grammar: a number, then a binary suffix (Ki, Mi, Gi,
Ti, Pi, Ei: powers of 1024), a decimal one (n, u, m, k, M, G, T, P, E: powers of 1000; ``m`` is
milli, ``M`` mega) or a decimal exponent (``e3``). As Kubernetes does, a CPU is rounded up to a
whole millicore and a memory size up to a whole byte. A plain number in a JSON body stays what the
field always meant (cores for CPU; megabytes where a field counted megabytes before)."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_GRAMMAR = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<binary>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<exponent>[eE][+-]?\d{1,3})|(?P<decimal>[numkMGTPE]?))$"
)
_BINARY = {suffix: Decimal(1024) ** (i + 1) for i, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
HINT = 'a Kubernetes quantity such as "2", "500m", "4Gi" or "512Mi"'


def parse_quantity(text: str) -> Decimal:
    """The value ``text`` denotes; ``ValueError`` (saying what is accepted) for anything else."""
    match = _GRAMMAR.fullmatch(text.strip()) if len(text) <= 64 else None
    if match is None:
        raise ValueError(f"{text[:64]!r} is not {HINT}")
    try:
        number = Decimal(match["number"])
    except InvalidOperation:  # the grammar admits only decimal numbers; kept for safety
        raise ValueError(f"{text[:64]!r} is not {HINT}") from None
    if match["binary"]:
        return number * _BINARY[match["binary"]]
    if match["exponent"]:
        return number.scaleb(int(match["exponent"][1:]))
    return number * _DECIMAL[match["decimal"] or ""]


def cpu_millicores(value: str | float) -> int:
    """CPU in millicores: a quantity string, or a number of cores; rounded up, at least 1m."""
    cores = parse_quantity(value) if isinstance(value, str) else _number(value)
    if cores <= 0:
        raise ValueError("a CPU amount must be more than 0")
    return max(1, math.ceil(cores * 1000))


def memory_bytes(value: str) -> int:
    """Memory in bytes from a quantity string; rounded up, more than 0."""
    amount = parse_quantity(value)
    if amount <= 0:
        raise ValueError("a memory amount must be more than 0")
    return math.ceil(amount)


def _number(value: float) -> Decimal:
    if isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not {HINT}")
    return Decimal(str(value))
