"""The platform's one backoff: base, 2·base, 4·base … capped, with jitter.

Used for a file run's transient failure (``services/app_run``), a webhook delivery
(``managers/notifier``) and a crashed stream instance's restart (``managers/streamingest``);
each passes its own base, cap and jitter.
"""

from __future__ import annotations

import math
import random

__all__ = ["backoff_s"]


def backoff_s(attempt: int, base_s: float, *, cap_s: float = math.inf, jitter: float = 0.0) -> float:
    """The wait after failed attempt ``attempt`` (1, 2 …): ``base_s · 2^(attempt-1)``, at
    most ``cap_s``, times a random factor in ``[1 - jitter, 1 + jitter]`` so that many
    retries do not fall in step."""
    delay = min(cap_s, base_s * 2 ** (attempt - 1))
    if jitter:
        delay *= random.uniform(1.0 - jitter, 1.0 + jitter)  # noqa: S311 (not for secrets)
    return float(delay)
