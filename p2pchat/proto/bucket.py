"""The one token bucket: ``rate`` units per second on average, ``burst`` at once.

Pure: the caller passes ``now`` (seconds on any monotonic clock). Used for the
participant's handshake budget, the relay's per-connection byte rate and the
sender's ``--limit-rate``.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """Starts full. :meth:`take` spends whole units or refuses; :meth:`charge`
    always spends (the level may go negative) and :meth:`wait` says how long
    until it is back at zero."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, now

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` if the bucket holds that much; False (nothing spent) if not."""
        self._refill(now)
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True

    def charge(self, now: float, cost: float) -> float:
        """Spend ``cost`` whatever the level; returns the seconds until the level
        is back at zero (0.0 while it is not negative)."""
        self._refill(now)
        self.tokens -= cost
        return self.wait()

    def wait(self) -> float:
        """Seconds until the level is back at zero (0.0 if it is not negative)."""
        return max(0.0, -self.tokens / self.rate)
