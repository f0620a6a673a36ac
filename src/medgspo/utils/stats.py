"""Small statistics shared by evaluation reports and judge accounting (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (``q`` in [0, 1]) of the values; ``nan`` for none.

    >>> quantile([3.0, 0.0, 2.0, 1.0], 0.5), quantile([5.0], 0.99)
    (1.5, 5.0)
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)
