"""Cooperative deadlines: when a solver should stop after the step in progress.

Every solver takes ``deadline=``: a ``time.perf_counter()`` value, or a :class:`Deadline`. The
solvers check it between their steps, so nothing is interrupted from outside: it works in any
thread, notebook and OS, and leaves the caller's timers and signal handlers alone.

A :class:`Deadline` can also stop a run that is *going to* lose: an autotuner that already has a
winner of ``beat`` seconds need not watch a slower candidate use all of them. The solvers report
their progress (:func:`progress`): the *settled prefix* (positions before the first one that
still changed, final by the triangular argument) or, for iterations that update every position,
how far the change has fallen towards the last bits at its recent rate (and, once there, how
many steps that took), whichever is further. After watching a run for ``observe × beat`` seconds
and :data:`MIN_STEPS` steps, the deadline extrapolates linearly (elapsed / progress) and stops
the run once that is over ``margin × beat``.

So a run stopped this way would have taken over ``margin`` times the winner unless its progress
was underestimated by more than that factor (:data:`MARGIN` says how the default was chosen); one
whose progress comes late and all at once (a Newton method whose first steps barely move) can be
stopped although it would have won. That is the price of a first call that costs about
``1 + observe × (candidates − 1)`` best times instead of ``candidates`` best times where the
losers lose by more than ``margin``. Candidates within ``margin`` of the winner still run to their
hard stop.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

OBSERVE = 0.1
"""Default: the fraction of ``beat`` a run is watched before its projection may stop it."""
MIN_STEPS = 3
"""Steps a run takes before its progress is projected: a contraction's first step changes the
states by nearly as much as its start (its rate shows from the second on)."""
MARGIN = 1.5
"""Default: a run is stopped once its projected time is over this multiple of ``beat``. Above the
largest overestimate (projected / true time, from a tenth of the run on) that
``benchmarks/last_bits_share.py`` measures on the default rnn_forward cases after a run's opening
(its steps before the change first falls to a tenth), so a run it stops would not have beaten
``beat``. In the opening a Newton method whose first steps barely move is overestimated by more
(the trained GRU's Newton, 111 steps in all, at its third step): there the projection can stop a
run that would have won."""

TIE = 0.1
"""The autotuners' tie: a candidate must beat the best time so far by more than this share to
change the choice, so their hard stop is the best time / (1 + TIE). The steady state then stays
within TIE of every candidate stopped there (the promise of ``method="auto"``), and candidates
that tie with the winner cost under one best time each instead of one."""


@dataclass(frozen=True)
class Deadline:
    """Stop at ``at`` (a ``clock()`` value; ``None``: no hard stop), or, with ``beat``
    (seconds), once the run's projected time from ``start`` (default: now) is over
    ``margin × beat``, judged from ``observe × beat`` seconds on. ``clock``: where the time is
    read, ``time.perf_counter`` unless a test drives its own."""

    at: float | None = None
    beat: float | None = None
    start: float | None = None
    observe: float = OBSERVE
    margin: float = MARGIN
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False, compare=False)
    _next: list = field(default_factory=lambda: [-math.inf], init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.start is None:
            object.__setattr__(self, "start", self.clock())
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
        """Whether it can stop a run projected to lose (it has a ``beat``)."""
        return self.beat is not None

    def due(self) -> bool:
        """Whether a solver should compute its progress for :meth:`passed` now: the run has been
        watched for ``observe × beat``, and no projection was asked for in the last quarter of
        that (the settled prefix costs a reduction; a fast step should not pay it every time)."""
        if self.beat is None:
            return False
        now = self.clock()
        if now - self.start < self.observe * self.beat or now < self._next[0]:
            return False
        self._next[0] = now + self.observe * self.beat / 4
        return True

    def passed(self, settled: float | None = None) -> bool:
        """Should the run stop after the step in progress? ``settled``: the run's progress in
        [0, 1] (:func:`progress`; ``None``: not computed this step, only the hard stop applies)."""
        now = self.clock()
        if self.at is not None and now >= self.at:
            return True
        if self.beat is None or settled is None or settled >= 1:
            return False
        elapsed = now - self.start
        if elapsed < self.observe * self.beat:
            return False
        return settled <= 0 or elapsed / settled > self.margin * self.beat


_EPS = {"float64": 2.0 ** -52, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}


def eps_of(dtype) -> float:
    """The machine epsilon of a floating dtype of NumPy, PyTorch or JAX (float32's unless it is
    one of float64, float16, bfloat16)."""
    return _EPS.get(str(dtype).removeprefix("torch."), 2.0 ** -23)


LAST_BITS = 8
"""At tol 0 a change within this many ulps of the first change's size is "the last bits"."""


def last_bits(dtype, first_change: float) -> float:
    """The floor of a tol-0 change for :func:`progress`: :data:`LAST_BITS` × eps × the first
    step's change (about the states' size: the iterations start from zeros)."""
    return LAST_BITS * eps_of(dtype) * first_change


TO_LAST_BITS = 0.5
"""The share of a run taken as done when its change first reaches ``floor``; the steps after it
(the last bits flipping, or Jacobi steps polishing after a Newton-type method stalls) are
projected as that many again (:func:`progress`). ``benchmarks/last_bits_share.py`` measures it on
the default rnn_forward cases: by time, Jacobi and the Newton types reach the last bits after
about a third to two thirds of their run (by steps the Newton types after far fewer: their
steps before it are the dear ones)."""


def progress(settled: float, changes: Sequence[float] = (), floor: float | None = None) -> float:
    """A run's progress in [0, 1] for :meth:`Deadline.passed` (its projected time is elapsed /
    progress): the settled fraction, or, where every step's change is known (``changes``, one per
    step so far, of an iteration that updates every position), whichever is further of that and

    * before the change first falls to ``floor``: :data:`TO_LAST_BITS` × k / (k + the steps still
      needed for it to fall there at its recent rate);
    * from the step k₀ at which it first fell there: :data:`TO_LAST_BITS` × k / k₀ (the run is
      projected to take k₀ / TO_LAST_BITS steps; at or past that, 1: only the hard stop applies).

    A contractive iteration whose error shrinks everywhere at once settles almost nothing until
    its last steps, but its change falls at a steady rate on a log scale; the rate is the faster
    of the last two steps' (a projection errs towards letting a run go on). ``floor``: the
    tolerance, or at tol 0 the last bits (:func:`last_bits`). Callers keep the largest progress
    seen."""
    k = len(changes)
    if k < 2 or floor is None or not floor > 0:
        return settled
    reached = next((i + 1 for i, change in enumerate(changes) if change <= floor), None)
    if reached is not None:
        return max(settled, min(1.0, TO_LAST_BITS * k / reached))
    last = changes[-1]
    tail = list(changes[-3:])
    rates = [math.log(a / b) for a, b in zip(tail[:-1], tail[1:]) if a > 0 and b > 0]
    rate = max(rates, default=0.0)
    if not rate > 0:
        return settled
    remaining = math.log(last / floor) / rate
    return max(settled, TO_LAST_BITS * k / (k + remaining))


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
    return None if found is None or found.at is None else Deadline(at=found.at, clock=found.clock)
