"""Wall-clock timing as DESIGN.md §7 asks: warm-up excluded, device synchronised, repeats."""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class Timing:
    """Seconds per call over ``repeats`` timed runs (warm-up runs not included)."""

    median_s: float
    min_s: float
    max_s: float
    iqr_s: float
    repeats: int
    warmup: int
    times_s: tuple[float, ...]

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


def timing_from(times, warmup: int) -> Timing:
    """Median, quartile spread and extremes of the seconds in ``times`` (one per timed call)."""
    times = [float(t) for t in times]
    if not times:
        raise ValueError("no timed repeats")
    ordered = sorted(times)
    repeats = len(times)
    quartiles = statistics.quantiles(ordered, n=4) if repeats > 1 else [ordered[0]] * 3
    return Timing(
        median_s=statistics.median(ordered),
        min_s=ordered[0],
        max_s=ordered[-1],
        iqr_s=quartiles[2] - quartiles[0],
        repeats=repeats,
        warmup=warmup,
        times_s=tuple(times),
    )
