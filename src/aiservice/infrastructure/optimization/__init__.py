"""Model optimisation with ONNX Runtime's quantiser and torch (ADR 0029)."""
