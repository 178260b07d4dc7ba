"""`RATE_LIMIT` counted in Redis (access/ratelimit.py tells the rules): shared by every worker and instance."""

from __future__ import annotations

import logging

import redis

from proxy.redis_client import OccasionalWarning, redis_link

from .ratelimit import ALLOWED, Limit, Verdict

log = logging.getLogger("relay.access")

# KEYS[i]: the counter of limit i (a hash {w: window, n: count}); ARGV: 1 to count (0 to peek), then
# period1, count1, period2, count2... Returns {index of the refusing limit (1-based) or 0, ms until its window ends}.
_HIT_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local refused, wait = 0, 0
local windows = {}
for i, key in ipairs(KEYS) do
  local period, count = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local window = math.floor(now / period)
  windows[i] = window
  local state = redis.call('HMGET', key, 'w', 'n')
  if tonumber(state[1]) == window and tonumber(state[2]) >= count then
    local left = (window + 1) * period - now
    if left > wait then refused, wait = i, left end
  end
end
if refused > 0 then return {refused, math.ceil(wait * 1000)} end
if ARGV[1] ~= '1' then return {0, 0} end
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('HGET', key, 'w')) == windows[i] then
    redis.call('HINCRBY', key, 'n', 1)
  else
    redis.call('HSET', key, 'w', windows[i], 'n', 1)
  end
  redis.call('EXPIRE', key, tonumber(ARGV[2 * i]) + 1)
end
return {0, 0}
"""


class RedisCounter:
    """Counters in Redis, shared by every process that uses the same server."""

    def __init__(self, url: str, prefix: str = "relay:ratelimit", verify_tls: bool = True, timeout: float = 0.5):
        self._link = redis_link(url, verify_tls, timeout)
        self._script = self._link.client.register_script(_HIT_SCRIPT)
        self._prefix = prefix
        self._warn = OccasionalWarning(log, "rate limit store (Redis) unreachable, requests are not limited: %s")

    def hit(self, caller: str, limits: tuple[Limit, ...]) -> Verdict:
        return self._run(caller, limits, count=True)

    def peek(self, caller: str, limits: tuple[Limit, ...]) -> Verdict:
        return self._run(caller, limits, count=False)

    def _run(self, caller: str, limits: tuple[Limit, ...], count: bool) -> Verdict:
        # One hash tag per caller keeps its counters on one node of a Redis cluster.
        keys = [f"{self._prefix}:{{{caller}}}:{limit.period}" for limit in limits]
        args = [1 if count else 0, *(value for limit in limits for value in (limit.period, limit.count))]
        try:
            refused, wait_ms = self._link.run(self._script, keys=keys, args=args)
        except redis.RedisError as exc:
            self._warn(type(exc).__name__)
            return ALLOWED
        if not refused:
            return ALLOWED
        return Verdict.refuse(limits[int(refused) - 1], int(wait_ms) / 1000)
