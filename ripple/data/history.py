"""What the generator and ``ripple labels`` both need to agree on about a post history.

One definition each of: how a time or a duration is written on the command line, how users are split, and how
``user.avg_engagement`` is computed from posts and their reshares, so a generated user table and one recomputed
from the past of a cut history mean the same thing.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone

import numpy as np

from ripple.data.ids import add_counts

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_time(text: str | int | float, what: str = "--cutoff") -> int:
    """Epoch seconds from epoch seconds (``1715000000``) or an ISO-8601 time (``2024-05-06``,
    ``2024-05-06T12:00:00Z``, ``...+02:00``); a time without a zone is UTC."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return _in_range(text, text, what, "epoch seconds")
    s = str(text).strip()
    if re.fullmatch(r"[+-]?\d+", s):  # exact: a float would round a 19-digit time, or overflow to inf
        return _in_range(int(s), text, what, "epoch seconds")
    if re.fullmatch(r"[+-]?\d+(\.\d+)?", s):
        return _in_range(float(s), text, what, "epoch seconds")
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
    except ValueError:
        raise ValueError(f"{what} {text!r} is neither epoch seconds nor an ISO-8601 time; write e.g. 1715000000 "
                         "or 2024-05-06T00:00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp())


def parse_duration(text: str | int | float, what: str = "--horizon") -> int:
    """Seconds from ``14d``, ``36h``, ``90m``, ``3600s``, ``2w`` or a plain number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{what} {text!r} is not a duration; write a number with a unit s, m, h, d or w "
                         "(e.g. 14d, 36h)")
    return _in_range(float(m.group(1)) * _UNITS[m.group(2) or "s"], text, what, "seconds")


#: times and durations are int64 seconds in every table and array
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _in_range(value: int | float, text, what: str, unit: str) -> int:
    """``value`` as int64 seconds, or a ValueError naming the flag (a huge number must not overflow later)."""
    if isinstance(value, float) and not math.isfinite(value) or not _INT64[0] <= value <= _INT64[1]:
        shown = str(text) if len(str(text)) <= 40 else str(text)[:40] + "..."
        raise ValueError(f"{what} {shown!r} is out of range: {unit} must fit in 64 bits (|t| < 2^63)")
    return int(value)


def iso(ts: int) -> str:
    """UTC ISO-8601 of epoch seconds; a time outside the years 1-9999 (a history in the wrong --time-unit) as
    ``epoch <seconds>s``, so a message naming it never fails itself."""
    try:
        return datetime.fromtimestamp(int(ts), tz=timezone.utc).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"epoch {int(ts)}s"


def assign_splits(r: np.ndarray, val_fraction: float = 0.15, test_fraction: float = 0.15) -> np.ndarray:
    """``train``/``val``/``test`` per user from one uniform draw each (the draw, not the user order, decides).

    Shapes: r [L] float in [0, 1) -> [L] str."""
    return np.where(r < test_fraction, "test", np.where(r < test_fraction + val_fraction, "val", "train"))


def add_engagement(rate_sum: np.ndarray, post_count: np.ndarray, creator: np.ndarray, reshares: np.ndarray,
                   followers: np.ndarray) -> None:
    """Accumulate posts into the per-user sums behind ``avg_engagement`` (in place).

    A post's engagement rate is its reshares per follower of its creator (followers counted as the table that
    carries it counts them; at least 1).

    Shapes: rate_sum [N] float64, post_count [N] int64, followers [N]; creator [P] dense user index, reshares [P].
    """
    add_counts(post_count, creator)
    add_counts(rate_sum, creator, reshares.astype(np.float64) / np.maximum(followers[creator], 1))


def avg_engagement(rate_sum: np.ndarray, post_count: np.ndarray) -> np.ndarray:
    """Mean engagement rate over a user's posts; 0 for a user without posts. Shapes: [N] -> [N] float32."""
    return (rate_sum / np.maximum(post_count, 1)).astype(np.float32)
