"""Deployers: replicas as local processes or Kubernetes objects, and the client the fronts use."""
