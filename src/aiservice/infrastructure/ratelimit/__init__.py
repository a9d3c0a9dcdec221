"""Token-bucket rate limiters: in-process (one replica) and Redis (shared by every replica)."""
