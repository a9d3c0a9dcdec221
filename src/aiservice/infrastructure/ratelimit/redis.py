"""Token buckets in Redis, shared by every replica: one Lua script reads, refills and spends them
atomically, on the Redis server's clock (so replicas with skewed clocks agree).

When Redis cannot be reached the limiter fails open: calls are let through unchecked (counted by
``on_unchecked`` and logged once per outage) and Redis is not asked again for ``pause_seconds``, so
an outage costs at most one timeout a second instead of one per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
import structlog

from aiservice.application.ports import RateDecision, TokenBucket
from aiservice.application.rate_limits import decide

log = structlog.get_logger("aiservice.ratelimit")

# KEYS: one per bucket. ARGV: rate, burst for each bucket, in the same order.
# Reply: {1 if allowed else 0, tokens left in each bucket (as strings: Lua numbers become integers)}.
TOKEN_BUCKETS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local levels, allowed = {}, 1
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local level = tonumber(state[1])
  if level == nil then
    level = burst
  else
    level = math.min(burst, level + math.max(0, now - tonumber(state[2])) * rate)
  end
  levels[i] = level
  if level < 1 then allowed = 0 end
end
local reply = {allowed}
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  if allowed == 1 then
    levels[i] = levels[i] - 1
    redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', levels[i]),
      'at', string.format('%.6f', now))
    redis.call('PEXPIRE', KEYS[i], math.ceil((burst - levels[i]) / rate * 1000) + 1000)
  end
  reply[i + 1] = string.format('%.17g', levels[i])
end
return reply
"""


class RedisRateLimiter:
    blocking = True

    def __init__(
        self,
        host: str,
        port: int = 6379,
        *,
        password: str | None = None,
        db: int = 0,
        timeout_seconds: float = 0.25,
        pause_seconds: float = 1.0,
        on_unchecked: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = redis.Redis(
            host=host,
            port=port,
            password=password,
            db=db,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
        )
        self._script = self._client.register_script(TOKEN_BUCKETS)
        self._pause = pause_seconds
        self._on_unchecked = on_unchecked
        self._down_until = 0.0
        self._down = False
        self._where = f"{host}:{port}/{db}"

    def acquire(self, buckets: list[TokenBucket]) -> RateDecision | None:
        if self._down and time.monotonic() < self._down_until:
            self._on_unchecked()
            return None
        args = [value for bucket in buckets for value in (repr(bucket.rate), bucket.burst)]
        try:
            allowed, *levels = self._script(keys=[bucket.key for bucket in buckets], args=args)
        except redis.RedisError as exc:
            self._went_down(exc)
            return None
        if self._down:
            self._down = False
            log.info("rate limit store reachable again", redis=self._where)
        return decide(buckets, [float(level) for level in levels], allowed == 1)

    def close(self) -> None:
        self._client.close()

    def _went_down(self, exc: redis.RedisError) -> None:
        self._down_until = time.monotonic() + self._pause
        self._on_unchecked()
        if not self._down:
            self._down = True
            log.warning(
                "rate limit store unreachable: letting calls through unchecked",
                redis=self._where,
                error=str(exc),
            )
