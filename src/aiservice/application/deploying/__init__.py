"""Deployments: the use cases, the reconcile loop that drives the deployers, and their ports."""
