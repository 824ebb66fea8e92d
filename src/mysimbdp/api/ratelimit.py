"""Per-tenant rate limits for the API: token buckets. Pure: the clock is injected.

A bucket holds up to ``capacity`` tokens and refills at ``rate_per_s``. A POST of n messages
takes n tokens. A POST larger than the whole bucket is let through when the bucket is full
(it would otherwise never pass) and leaves the bucket in debt, so the long-run rate holds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass
class TokenBucket:
    rate_per_s: float
    capacity: float
    clock: Clock = time.monotonic
    tokens: float = field(init=False)
    _updated_at: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.capacity <= 0:
            raise ValueError(f"rate_per_s and capacity must be positive, got {self.rate_per_s}, {self.capacity}")
        self.tokens = self.capacity
        self._updated_at = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self._updated_at) * self.rate_per_s)
        self._updated_at = now

    def take(self, n: int) -> float:
        """Take ``n`` tokens and return 0.0, or take nothing and return the seconds to wait."""
        self._refill()
        needed = min(float(n), self.capacity)
        if self.tokens >= needed:
            self.tokens -= n
            return 0.0
        return (needed - self.tokens) / self.rate_per_s

    def give_back(self, n: int) -> None:
        """Return ``n`` tokens taken for work that was not done (e.g. the broker was down)."""
        self._refill()
        self.tokens = min(self.capacity, self.tokens + n)


@dataclass
class RateLimiter:
    """One :class:`TokenBucket` per tenant, rebuilt when the tenant's limits change."""

    clock: Clock = time.monotonic
    _buckets: dict[str, TokenBucket] = field(default_factory=dict, repr=False)

    def bucket(self, tenant: str, rate_per_s: float, capacity: float) -> TokenBucket:
        found = self._buckets.get(tenant)
        if found is None or (found.rate_per_s, found.capacity) != (rate_per_s, capacity):
            found = self._buckets[tenant] = TokenBucket(rate_per_s, capacity, self.clock)
        return found


def retry_after_s(wait_s: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))
