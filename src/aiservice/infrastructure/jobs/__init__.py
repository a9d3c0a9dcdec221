"""Job runners: where training jobs execute (local worker processes by default)."""
