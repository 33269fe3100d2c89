"""The fixed duration histogram every rollup row carries, and percentiles read from it.

Bucket 0 holds durations below 1 ms; bucket i (1 ≤ i < LAST) holds [2^((i-1)/4), 2^(i/4)) ms, four
buckets per doubling (±9 % resolution); bucket LAST holds everything from 2^(MAX_EXP) ms (≈ 4.7 h) on.
Because the edges are fixed, histograms of any rows add up element by element.
"""

from __future__ import annotations

from collections.abc import Sequence

PER_DOUBLING = 4
MAX_EXP = 24
BUCKETS = PER_DOUBLING * MAX_EXP + 2  # 98: [0,1), 96 log-spaced, overflow
LAST = BUCKETS - 1


def bucket_sql(column: str) -> str:
    """SQL for the bucket index of a duration column (NULL stays NULL)."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL WHEN {column} < 1 THEN 0 "
        f"ELSE LEAST({LAST}, floor(ln({column}) / ln(2.0) * {PER_DOUBLING})::int + 1) END"
    )


def bucket_of(value: float) -> int:
    """Python twin of `bucket_sql` (tests)."""
    import math

    if value < 1:
        return 0
    return min(LAST, math.floor(math.log(value) / math.log(2.0) * PER_DOUBLING) + 1)


def bounds(index: int) -> tuple[float, float]:
    if index == 0:
        return 0.0, 1.0
    low = 2.0 ** ((index - 1) / PER_DOUBLING)
    high = 2.0 ** (index / PER_DOUBLING) if index < LAST else float("inf")
    return low, high


def percentile(
    buckets: Sequence[int], q: float, *, minimum: float | None = None, maximum: float | None = None
) -> float | None:
    """The q-quantile (0 < q < 1) estimated from bucket counts, interpolated geometrically inside its bucket
    and clamped to the observed minimum and maximum. None when there is no duration."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, n in enumerate(buckets):
        if n == 0:
            continue
        if seen + n >= rank:
            low, high = bounds(index)
            if minimum is not None:
                low = max(low, minimum)
            if maximum is not None:
                high = min(high, maximum)
            if high <= low:
                return low
            fraction = (rank - seen) / n
            value = low + (high - low) * fraction if low <= 0 else low * (high / low) ** fraction
            return round(value, 3)
        seen += n
    return maximum
