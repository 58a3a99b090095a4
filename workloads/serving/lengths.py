"""Token-length distributions for synthetic request traces: a rounded lognormal on [1, cap] fitted to a mean.

A length is K = max(1, round(X)) with X ~ LogNormal(mu, sigma), conditioned on K <= cap: draws longer than
the cap are redrawn, not cut to the cap. That mirrors vLLM's benchmark samplers (they drop requests whose
prompt exceeds 1024 tokens or prompt + output 2048, the limits of the paper's OPT models) and avoids a
spike of requests at exactly the cap, which would flatter Orca-Pow2 (a power-of-two cap is then reserved
exactly) and Orca-Max.

With F the CDF of X and T = F(cap + 1/2): P(K > k) = (T - F(k + 1/2)) / T for 1 <= k < cap, so
E[K] = 1 + sum_{k=1}^{cap-1} P(K > k), which increases with mu. `fit_mu` solves for the mu at which the mean
*of the bounded, rounded distribution* equals a published mean exactly (to 1e-9 tokens) for a chosen sigma;
the unbounded formula mu = ln(mean) - sigma^2 / 2 would miss it by the mass the bounds remove.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _cdf(x: float, mu: float, sigma: float) -> float:
    """P(X < x) for X ~ LogNormal(mu, sigma)."""
    return 0.5 * math.erfc(-(math.log(x) - mu) / (sigma * math.sqrt(2.0)))


def bounded_mean(mu: float, sigma: float, cap: int) -> float:
    """E[K] for K = max(1, round(X)) given round(X) <= cap, X ~ LogNormal(mu, sigma)."""
    top = _cdf(cap + 0.5, mu, sigma)
    if top <= 0.0:  # all mass beyond the cap: the conditional law degenerates to the cap itself
        return float(cap)
    return 1.0 + math.fsum(max(0.0, top - _cdf(k + 0.5, mu, sigma)) for k in range(1, cap)) / top


@dataclass(frozen=True)
class BoundedLogNormal:
    """K = max(1, round(X)) conditioned on round(X) <= cap, X ~ LogNormal(mu, sigma) (natural log)."""

    mu: float
    sigma: float
    cap: int

    def mean(self) -> float:
        """The exact mean of K."""
        return bounded_mean(self.mu, self.sigma, self.cap)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """`size` lengths as int64, drawn from `rng` (rejection of draws above the cap)."""
        kept = np.empty(0, dtype=np.int64)
        while kept.size < size:
            draws = np.rint(rng.lognormal(self.mu, self.sigma, 2 * (size - kept.size) + 16))
            kept = np.concatenate([kept, np.maximum(draws[draws <= self.cap], 1).astype(np.int64)])
        return kept[:size]


def fit_mu(target_mean: float, sigma: float, cap: int, *, tol: float = 1e-9) -> BoundedLogNormal:
    """The BoundedLogNormal with this sigma and cap whose mean is `target_mean` (within `tol` tokens).

    Raises ValueError when no mu can reach the target: the mean of a length in [1, cap] lies strictly
    between 1 and cap, and sigma must leave the target reachable (a huge sigma piles the mass at both ends).
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if cap < 2:
        raise ValueError(f"the length cap must be at least 2 tokens, got {cap}")
    if not 1.0 < target_mean < cap:
        raise ValueError(f"a mean length of {target_mean} tokens is out of reach for lengths in [1, {cap}]: "
                         f"it must lie strictly between 1 and {cap}; raise the cap or lower the mean")
    low, high = -10.0 * sigma - 10.0, math.log(cap) + 10.0 * sigma + 10.0
    if not bounded_mean(low, sigma, cap) < target_mean < bounded_mean(high, sigma, cap):
        raise ValueError(f"no lognormal with sigma {sigma} on [1, {cap}] has mean {target_mean}; lower sigma")
    for _ in range(200):
        mid = 0.5 * (low + high)
        value = bounded_mean(mid, sigma, cap)
        if abs(value - target_mean) <= tol:
            return BoundedLogNormal(mid, sigma, cap)
        if value < target_mean:
            low = mid
        else:
            high = mid
    return BoundedLogNormal(0.5 * (low + high), sigma, cap)
