"""Names and labels of a deployment's Kubernetes objects.

A deployment's name is unique within its tenant only, and every tenant's objects share one namespace,
so an object is named for both: ``<tenant>-<name>`` cut to fit, then ``-`` and 16 hex digits of
SHA-256 over ``tenant/name``. The hash is always there, even when ``<tenant>-<name>`` would fit:
tenant ids may hold ``-`` themselves, so without it tenant ``a-b``'s ``c`` and tenant ``a``'s ``b-c``
would both be ``a-b-c``, and one tenant could name a deployment to overwrite another's objects
(64 bits make finding such a name infeasible). The result is a DNS-1035 label (at most 63 lower-case
letters, digits and ``-``, starting with a letter), which a Service needs and which also satisfies
the DNS-1123 rules of a Deployment, a HorizontalPodAutoscaler and a PodDisruptionBudget.

Label values have their own, looser grammar (63 characters of letters, digits, ``-``, ``_`` and ``.``,
alphanumeric at both ends); a value that does not fit is shortened and hashed the same way. Exact
values (tenant id, deployment id) travel in annotations, which have no such limits.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
HASH_CHARS = 16
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def object_name(tenant_id: str, name: str) -> str:
    """The name of every object of tenant ``tenant_id``'s deployment ``name`` (see the module doc)."""
    readable = re.sub(r"[^a-z0-9-]+", "-", f"{tenant_id}-{name}".lower())
    if not readable[:1].isalpha():
        readable = "t" + readable  # a tenant id may start with a digit; a DNS-1035 label may not
    head = readable[: MAX_NAME - HASH_CHARS - 1].rstrip("-")
    return f"{head}-{_digest(f'{tenant_id}/{name}')}"


def label_value(text: str) -> str:
    """``text`` when it is a valid label value, else its cleaned head plus a hash of all of it."""
    if len(text) <= MAX_NAME and LABEL_VALUE.fullmatch(text):
        return text
    head = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[: MAX_NAME - HASH_CHARS - 1]
    head = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", head)
    return f"{head}-{_digest(text)}" if head else _digest(text)
