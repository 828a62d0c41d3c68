"""Cooperative deadlines: when a solver should stop after the step in progress.

Every solver takes ``deadline=``: a ``time.perf_counter()`` value, or a :class:`Deadline`. The
solvers check it between their steps, with the fraction of the positions they already know final
(the *settled prefix*: positions before the first one that still changed, which the triangular
argument makes final), so nothing is interrupted from outside: it works in any thread, notebook
and OS, and leaves the caller's timers and signal handlers alone.

A :class:`Deadline` can also stop a run that is *going to* lose: an autotuner that already has a
winner of ``beat`` seconds need not watch a slower candidate use all of them. After observing a
run for ``observe × beat`` seconds, it extrapolates the settled fraction linearly (elapsed /
settled) and stops the run once that projection is over ``margin × beat``. Jacobi-type fronts
advance about linearly, so a run projected at over ``margin`` times the winner rarely finishes
first; one whose progress comes late (a Newton method that settles everything in its last steps)
can be stopped although it would have won. That is the price of a first call that costs
``1 + observe × (candidates − 1)`` best times instead of ``candidates`` best times, and why
``margin`` leaves room.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field

OBSERVE = 0.25
"""Default: the fraction of ``beat`` a run is watched before its projection may stop it."""
MARGIN = 1.5
"""Default: a run is stopped once its projected time is over this multiple of ``beat``."""


@dataclass(frozen=True)
class Deadline:
    """Stop at ``at`` (a ``time.perf_counter()`` value; ``None``: no hard stop), or, with
    ``beat`` (seconds), once the run's projected time from ``start`` is over ``margin × beat``,
    judged from ``observe × beat`` seconds on."""

    at: float | None = None
    beat: float | None = None
    start: float = field(default_factory=time.perf_counter)
    observe: float = OBSERVE
    margin: float = MARGIN

    def __post_init__(self):
        for name in ("at", "beat"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                      or math.isnan(value)):
                raise ValueError(f"Deadline.{name} must be a number or None, got {value!r}")
        if self.beat is not None and not self.beat > 0:
            raise ValueError(f"Deadline.beat must be > 0 seconds, got {self.beat!r}")
        if not 0 <= self.observe:
            raise ValueError(f"Deadline.observe must be >= 0, got {self.observe!r}")
        if not self.margin >= 1:
            raise ValueError(f"Deadline.margin must be >= 1 (a run is never stopped for being "
                             f"projected to win), got {self.margin!r}")

    @property
    def projects(self) -> bool:
        """Whether :meth:`passed` uses the settled fraction (solvers compute it only then)."""
        return self.beat is not None

    def passed(self, settled: float | None = None) -> bool:
        """Should the run stop after the step in progress? ``settled``: the fraction of the
        positions known final, in [0, 1] (``None``: unknown, only the hard stop applies)."""
        now = time.perf_counter()
        if self.at is not None and now >= self.at:
            return True
        if self.beat is None or settled is None or settled >= 1:
            return False
        elapsed = now - self.start
        if elapsed < self.observe * self.beat:
            return False
        return settled <= 0 or elapsed / settled > self.margin * self.beat


def as_deadline(value) -> Deadline | None:
    """``None``, a :class:`Deadline`, or a ``time.perf_counter()`` value as a hard stop; anything
    else is refused with a message."""
    if value is None or isinstance(value, Deadline):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"deadline must be a time.perf_counter() value or an "
                         f"ffsolve.Deadline, got {value!r}")
    return Deadline(at=float(value))


def passed(deadline, settled: float | None = None) -> bool:
    """:meth:`Deadline.passed` for ``None`` (never), a number (a hard stop) or a
    :class:`Deadline`; for loops that check a caller's deadline themselves."""
    found = as_deadline(deadline)
    return found is not None and found.passed(settled)


def hard_part(deadline):
    """``deadline`` without its projection (its hard stop only): for the parts of a program
    whose own progress is not the program's (one batch of several)."""
    found = as_deadline(deadline)
    if found is None or found.at is None and found.beat is None:
        return None
    return Deadline(at=found.at) if found.at is not None else None


def projects(deadline) -> bool:
    """Whether ``deadline`` wants the settled fraction (so a loop computes it only then)."""
    return isinstance(deadline, Deadline) and deadline.projects
