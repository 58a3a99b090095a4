"""The outage breaker: after a few consecutive connection/timeout/5xx errors the remote cache is
skipped for a cooldown, then exactly one caller probes it; any answer from the server (even a 404
or a 403) closes the breaker again, another outage error opens it for another cooldown. A probe
cut short by a local error (released: it says nothing about the remote) lets the next caller probe.

The run-level budget bounds what a run can lose to the remote: once the requests that ended in an
outage error, and the answers that came too slowly (see record_success), have taken `budget`
seconds in all, the breaker stays open for the rest of the run.

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
    def __init__(self, threshold: int = 3, cooldown: float = 30.0, budget: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.threshold = threshold
        self.cooldown = cooldown
        self.budget = budget              # seconds of failed requests a run tolerates (None: no limit)
        self.clock = clock
        self.state = CLOSED
        self.consecutive_failures = 0
        self.times_opened = 0
        self.lost = 0.0                   # seconds taken by requests that ended in an outage error
        self.gave_up = False              # the budget is spent: open for the rest of the run
        self._opened_at = 0.0
        self._prober: int | None = None   # the thread that holds the probe
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """May a request go out now? While open, False until the cooldown ends; then True for one
        caller (the probe) and False for everyone else until the probe reports back: a success,
        a failure, or a release (every request the remote cache makes reports one of them)."""
        with self._lock:
            if self.state == CLOSED:
                return True
            if self.gave_up:
                return False
            if self.state == OPEN and self.clock() - self._opened_at >= self.cooldown:
                self.state = PROBING
                self._prober = threading.get_ident()
                return True
            return False

    def record_success(self, lost: float = 0.0) -> bool:
        """The server answered (whatever it said): the remote is up. `lost`: seconds the answer
        cost the run beyond what a healthy server takes (a server that answers every request just
        before the read timeout never fails one, and would cost a run that much per request);
        True when they spent the budget, which leaves the breaker open for good."""
        with self._lock:
            if self.gave_up:
                return False
            self.state = CLOSED
            self.consecutive_failures = 0
            self._prober = None
            if lost > 0:
                self.lost += lost
                if self.budget is not None and self.lost >= self.budget:
                    self.gave_up = True
                    self.state = OPEN
                    self.times_opened += 1
                    return True
            return False

    def record_failure(self, lost: float = 0.0) -> bool:
        """Count one outage error (a request that took `lost` seconds); True when this one opened
        the breaker (or spent the budget, which leaves it open for good)."""
        with self._lock:
            self.consecutive_failures += 1
            self.lost += max(0.0, lost)
            if not self.gave_up and self.budget is not None and self.lost >= self.budget:
                self.gave_up = True
                opened = self.state == CLOSED
                self.state = OPEN
                self.times_opened += opened
                return True
            if self.state == PROBING or (self.state == CLOSED and self.consecutive_failures >= self.threshold):
                self.state = OPEN
                self._opened_at = self.clock()
                self._prober = None
                self.times_opened += 1
                return True
            return False

    def release(self) -> None:
        """A request ended without telling anything about the remote (a local error): if it was
        the probe, the next caller may probe at once."""
        with self._lock:
            if self.state == PROBING and self._prober == threading.get_ident():
                self.state = OPEN
                self._prober = None

    @property
    def is_open(self) -> bool:
        return self.state != CLOSED
