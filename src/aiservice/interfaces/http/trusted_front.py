"""The scope key that marks a call a front forwarded to a replica (ADR 20).

A replica's edge (``serve-model``) sets it on a call that carries the fronts' replica token: the front
that forwarded it has logged, measured, traced and audited it already, so the replica only answers.
"""

TRUSTED_FRONT = "aiservice.trusted_front"
