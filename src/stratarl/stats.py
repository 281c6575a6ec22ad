"""Small statistics used in reports: Wilson intervals for success rates, their differences, and
mean ± t-interval over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    """A point estimate with a 95% interval."""

    value: float
    """The estimate."""
    low: float
    """Lower end of the interval."""
    high: float
    """Upper end of the interval."""

    def fmt(self, pct: bool = True) -> str:
        if pct:
            return f"{100 * self.value:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}]"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def wilson(successes: int, n: int, z: float = Z95) -> Interval:
    """Wilson score interval for a binomial proportion (well-behaved at 0 and n)."""
    if n <= 0:
        return Interval(0.0, 0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def newcombe_difference(s1: int, n1: int, s2: int, n2: int, z: float = Z95) -> Interval:
    """Interval for p2 − p1 from two independent proportions (Newcombe's hybrid score method)."""
    a, b = wilson(s1, n1, z), wilson(s2, n2, z)
    d = b.value - a.value
    low = d - math.sqrt((b.value - b.low) ** 2 + (a.high - a.value) ** 2)
    high = d + math.sqrt((b.high - b.value) ** 2 + (a.value - a.low) ** 2)
    return Interval(d, max(-1.0, low), min(1.0, high))


_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean with a two-sided 95% Student-t interval (a single value gives a zero-width interval)."""
    n = len(values)
    if n == 0:
        return Interval(0.0, 0.0, 0.0)
    m = sum(values) / n
    if n == 1:
        return Interval(m, m, m)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    dof = n - 1
    t = _T95.get(dof) or _T95[max(k for k in _T95 if k <= dof)]
    half = t * sd / math.sqrt(n)
    return Interval(m, m - half, m + half)
