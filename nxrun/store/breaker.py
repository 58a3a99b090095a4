"""The outage breaker: after a few consecutive connection/timeout/5xx errors the remote cache is
skipped for a cooldown, then exactly one caller probes it; a success closes the breaker again.

It holds no I/O of its own, so its behaviour is pinned down by tests with a fake clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
PROBING = "probing"


class OutageBreaker:
    def __init__(self, threshold: int = 3, cooldown: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.state = CLOSED
        self.consecutive_failures = 0
        self.times_opened = 0
        self._opened_at = 0.0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """May a request go out now? While open, False until the cooldown ends; then True for one
        caller (the probe) and False for everyone else until the probe reports back."""
        with self._lock:
            if self.state == CLOSED:
                return True
            if self.state == OPEN and self.clock() - self._opened_at >= self.cooldown:
                self.state = PROBING
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self.state = CLOSED
            self.consecutive_failures = 0

    def record_failure(self) -> bool:
        """Count one outage error; True when this one opened the breaker."""
        with self._lock:
            self.consecutive_failures += 1
            if self.state == PROBING or (self.state == CLOSED and self.consecutive_failures >= self.threshold):
                self.state = OPEN
                self._opened_at = self.clock()
                self.times_opened += 1
                return True
            return False

    @property
    def is_open(self) -> bool:
        return self.state != CLOSED
