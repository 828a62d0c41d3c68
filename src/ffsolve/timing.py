"""Wall-clock timing as DESIGN.md §7 asks: warm-up excluded, device synchronised, repeats.

The statistics of a set of timed samples (:func:`timing_from`): the median over every sample,
and its spread: the interquartile range from five repeats on, below five the minimum and maximum
(a quartile of three or four values is only the range under another name), so ``iqr_s`` is then
``None`` and ``spread`` says ``"min-max"``.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional


# Below this many timed repeats the spread is the minimum and maximum, not an interquartile range.
MIN_REPEATS_FOR_IQR = 5


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed samples (warm-up calls not included).

    Attributes:
        median_s: the median over every sample in ``times_s``.
        min_s, max_s: the fastest and slowest sample.
        iqr_s: the interquartile range of the samples; ``None`` below
            :data:`MIN_REPEATS_FOR_IQR` repeats, where ``spread`` is ``"min-max"``.
        repeats: timed repeats (rounds); a repeat may hold several samples.
        warmup: untimed warm-up calls (or rounds) before them.
        times_s: seconds per call of each sample: one call, or one group of calls divided by
            their number.
        spread: ``"iqr"`` or ``"min-max"``: which spread the tables report.
    """

    median_s: float
    min_s: float
    max_s: float
    iqr_s: Optional[float]
    repeats: int
    warmup: int
    times_s: tuple[float, ...]
    spread: str = "iqr"

    def as_dict(self) -> dict:
        out = asdict(self)
        out["times_s"] = list(self.times_s)
        return out


def synchronize(value: Any) -> Any:
    """Wait until ``value`` (a torch tensor, JAX array, or a structure of them) is computed.

    Only frameworks already imported are touched: a PyTorch job never pays for importing JAX.
    """
    if "jax" in sys.modules:
        sys.modules["jax"].block_until_ready(value)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return value


def time_call(
    fn: Callable[[], Any],
    repeats: int = 5,
    warmup: int = 1,
    sync: Optional[Callable[[Any], Any]] = synchronize,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls (JIT compilation, allocator), then ``repeats`` timed.

    Each timed call ends with ``sync(result)`` so asynchronous GPU work is inside the
    measurement.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
    sync = sync or (lambda value: value)
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - start)
    return timing_from(times, warmup)


def timing_from(times, warmup: int, repeats: Optional[int] = None) -> Timing:
    """Median, spread and extremes of the seconds per call in ``times`` (one per timed sample).

    ``repeats`` is the number of timed repeats the samples came from (default: one sample per
    repeat). From :data:`MIN_REPEATS_FOR_IQR` repeats on the spread is the interquartile range of
    the samples; below that it is their minimum and maximum, and ``iqr_s`` is ``None``.
    """
    times = [float(t) for t in times]
    if not times:
        raise ValueError("no timed repeats")
    repeats = len(times) if repeats is None else int(repeats)
    if repeats < 1 or repeats > len(times):
        raise ValueError(f"{len(times)} samples cannot come from {repeats} repeats")
    ordered = sorted(times)
    iqr = None
    if repeats >= MIN_REPEATS_FOR_IQR:
        quartiles = statistics.quantiles(ordered, n=4)
        iqr = quartiles[2] - quartiles[0]
    return Timing(
        median_s=statistics.median(ordered),
        min_s=ordered[0],
        max_s=ordered[-1],
        iqr_s=iqr,
        repeats=repeats,
        warmup=warmup,
        times_s=tuple(times),
        spread="iqr" if iqr is not None else "min-max",
    )
