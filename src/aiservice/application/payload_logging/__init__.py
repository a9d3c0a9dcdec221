"""Payload logging: sampled predictions logged off the hot path, their retention and feedback."""
