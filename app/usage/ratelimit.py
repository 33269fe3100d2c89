"""Rate limits per API key (the plan's requests per second) and per signed-in user (a setting).

GCRA (the generic cell rate algorithm) in one Lua script: Redis keeps one number per caller, the
"theoretical arrival time" of its next request, so the check-and-update is atomic across API nodes and
costs one round trip; the clock is Redis's own (`TIME`), so API nodes with drifting clocks agree. A
caller may burst `rate × AGENTRAIL_RATE_LIMIT_BURST_SECONDS` requests, then gets one per 1/rate seconds.

Rate limiting protects the service; it must never take ingest down with it: when Redis does not answer,
requests are let through (and logged).
"""

from __future__ import annotations

import math

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.errors import RateLimited
from app.principal import Principal
from app.runtime.connections import hold_refusal
from app.runtime.resources import Runtime
from app.settings import Settings
from app.usage import plans, quota
from app.usage.middleware import RateLimitDecision, note_rate_limit

log = structlog.get_logger(__name__)

PLAN_CACHE_SECONDS = 60

# KEYS[1]: the caller's key. ARGV[1]: microseconds between units; ARGV[2]: burst (units); ARGV[3]: units this
# request takes (1 for a request; a query's cost for the cost budget, a leaky bucket of points).
# Returns {allowed, retry_after_us, remaining, reset_us}.
_GCRA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local quantity = tonumber(ARGV[3] or '1')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat + interval * quantity - interval * burst
if now < allow_at then
  return {0, allow_at - now, math.max(0, math.floor((now - tat + interval * burst) / interval)), tat - now}
end
local new_tat = tat + interval * quantity
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
return {1, 0, math.floor((now - allow_at) / interval), new_tat - now}
"""


# Gives back units a request took (a query's cost beyond what it really returned): KEYS[1], ARGV[1] interval,
# ARGV[2] burst, ARGV[3] units. The theoretical arrival time moves back, never before now (a bucket never holds
# more than its burst). Returns the units available afterwards.
_GCRA_REFUND = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local quantity = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local new_tat = tat - interval * quantity
if new_tat <= now then
  redis.call('DEL', KEYS[1])
  return burst
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
return math.floor((now - new_tat + interval * burst) / interval)
"""


def plan_cache_key(org_id: str) -> str:
    return f"agentrail:plan:{org_id}"


class RateLimiter:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._script = redis.register_script(_GCRA)

    async def refund(self, key: str, *, rate: float, burst: int, quantity: int) -> int:
        """Gives back `quantity` units taken by `hit`; returns the units available afterwards."""
        interval = max(1, round(1_000_000 / rate))
        refund = self._redis.register_script(_GCRA_REFUND)
        return int(await refund(keys=[key], args=[interval, burst, quantity]))

    async def hit(self, key: str, *, rate: float, burst: int, quantity: int = 1) -> RateLimitDecision:
        interval = max(1, round(1_000_000 / rate))
        allowed, retry_us, remaining, reset_us = await self._script(keys=[key], args=[interval, burst, quantity])
        return RateLimitDecision(
            allowed=bool(allowed),
            limit=rate,
            burst=burst,
            remaining=int(remaining),
            reset_seconds=int(reset_us) / 1_000_000,
            retry_after_seconds=int(retry_us) / 1_000_000,
        )


async def org_plan(runtime: Runtime, org_id: str) -> str:
    """The organisation's plan, cached in Redis for a minute (dropped by the webhook when it changes)."""
    cached = await runtime.redis.get(plan_cache_key(org_id))
    if cached is not None:
        return cached.decode() if isinstance(cached, bytes) else str(cached)
    async with runtime.db.tenant_session(org_id) as session:
        plan = await quota.current_plan(session, org_id)
    await runtime.redis.set(plan_cache_key(org_id), plan, ex=PLAN_CACHE_SECONDS)
    return plan


def _limit_for(principal: Principal, plan: str | None, settings: Settings) -> tuple[str, float]:
    if principal.is_user:
        return f"agentrail:ratelimit:user:{principal.user_id}", settings.user_requests_per_second
    return f"agentrail:ratelimit:key:{principal.api_key_id}", plans.limits_for(plan, settings).requests_per_second


async def enforce_rate_limit(runtime: Runtime, principal: Principal) -> None:
    """RATE_LIMITED (429, Retry-After) when the caller is over its rate. Called once per authenticated request."""
    settings = runtime.settings
    if not plans.limits_enforced(settings):
        return
    try:
        plan = None if principal.is_user else await org_plan(runtime, principal.org_id)
        key, rate = _limit_for(principal, plan, settings)
        if rate <= 0:
            return
        burst = plans.burst_for(rate, settings)
        decision = await RateLimiter(runtime.redis).hit(key, rate=rate, burst=burst)
    except RedisError as exc:
        log.warning("rate limiter unavailable; letting the request through", error=str(exc))
        return
    note_rate_limit(decision)
    if not decision.allowed:
        who = "user" if principal.is_user else "API key"
        hold_refusal(key, math.ceil(decision.retry_after_seconds))  # a caller that did not wait is made to
        raise RateLimited(
            f"rate limit of {decision.limit:g} requests per second per {who} exceeded "
            f"(bursts up to {decision.burst}); retry after the time in Retry-After",
            retry_after=math.ceil(decision.retry_after_seconds),
            limit=decision.limit,
        )
