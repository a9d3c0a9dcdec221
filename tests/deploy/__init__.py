"""The service's own deployment: deploy/Dockerfile, deploy/compose.yaml, the kustomize manifests under
deploy/kubernetes/ and the CI workflow, each checked by the tool that owns its format."""
