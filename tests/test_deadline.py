"""Cooperative deadlines (``ffsolve.Deadline``): the hard stop, and the projection that stops a
run going to lose from its settled prefix without stopping one going to win."""

import time

import numpy as np
import pytest
import torch

import ffsolve
from ffsolve.deadline import Deadline, as_deadline, hard_part, passed


def started(seconds_ago: float, **kw) -> Deadline:
    return Deadline(start=time.perf_counter() - seconds_ago, **kw)


def test_projection_rules():
    # Watched for 0.5 s of a 1 s beat, a fifth settled: projected 2.5 s > 2 x 1 s -> stop.
    assert started(0.5, beat=1.0).passed(0.2)
    # Half settled: projected 1 s, under the margin -> go on.
    assert not started(0.5, beat=1.0).passed(0.5)
    # Before observe x beat nothing is projected, however little has settled.
    assert not started(0.05, beat=1.0).passed(0.0)
    # Nothing settled once watched: projected forever.
    assert started(0.3, beat=1.0).passed(0.0)
    # Without the settled fraction only the hard stop counts.
    assert not started(0.5, beat=1.0).passed(None)
    assert started(0.0, at=time.perf_counter() - 1).passed(None)
    # No beat: a plain hard stop, whatever is settled.
    assert not started(5.0, at=time.perf_counter() + 60).passed(0.0)


def test_bad_deadlines_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="beat"):
        Deadline(beat=0.0)
    with pytest.raises(ValueError, match="margin"):
        Deadline(beat=1.0, margin=0.5)
    with pytest.raises(ValueError, match="at"):
        Deadline(at="soon")
    with pytest.raises(ValueError, match="deadline must be"):
        as_deadline("soon")
    with pytest.raises(ValueError, match="deadline must be"):
        ffsolve.solve(lambda x: x, np.zeros(4), "jacobi", deadline=True)


def test_helpers_take_numbers_and_none():
    assert not passed(None, 0.0)
    assert passed(time.perf_counter() - 1)
    assert hard_part(None) is None and hard_part(Deadline(beat=1.0)) is None
    hard = hard_part(Deadline(at=5.0, beat=1.0))
    assert hard.at == 5.0 and not hard.projects


class FakeClock:
    """A clock that only the maps and steps below advance (``pause`` seconds a call), so every
    projection sees the same times whatever else runs on the machine."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def slow_chain(length: int, pause: float, clock: FakeClock):
    """x_t = x_{t-1} + 1 from x_0 = 1: Jacobi's front advances one position per call."""
    def f(x):
        clock.now += pause
        y = torch.empty_like(x)
        y[0] = 1.0
        y[1:] = x[:-1] + 1.0
        return y
    return f


def test_solve_stops_a_run_projected_to_lose_before_its_hard_stop():
    length, pause, clock = 200, 0.002, FakeClock()
    res = ffsolve.solve(slow_chain(length, pause, clock), torch.zeros(length), "jacobi",
                        deadline=Deadline(at=10.0, beat=0.05, clock=clock))
    assert res.stopped_by == "deadline" and not res.converged
    # It would need ~200 calls (0.4 s); the beat is 0.05 s: stopped soon after 0.25 x 0.05 s,
    # far before the hard stop of 10 s.
    assert res.iterations < length // 4


def test_solve_lets_a_run_projected_to_win_finish():
    # Jacobi's front advances 16 positions per call: 5 calls of 10 ms settle all 64, well inside
    # the 0.1 s beat, and every projection on the way says so.
    length, stride = 64, 16
    target = torch.arange(length, dtype=torch.float32)
    clock = FakeClock()

    def f(x):
        clock.now += 0.01
        y = target.clone()
        shifted = torch.zeros_like(x)
        shifted[stride:] = x[:-stride] - target[:-stride]  # reads only earlier positions
        return y + shifted

    res = ffsolve.solve(f, torch.full((length,), 5.0), "jacobi",
                        deadline=Deadline(at=10.0, beat=0.1, clock=clock))
    assert res.converged and torch.equal(res.x, target)


@pytest.mark.parametrize("method", ["jacobi", "gs_jacobi", "jacobi_gs", "sequential"])
def test_every_solve_method_reports_its_settled_prefix(method):
    # A beat so small that only a run settling everything on its first check survives: every
    # method stops, before the hard stop, and says so.
    length, clock = 100, FakeClock()
    res = ffsolve.solve(slow_chain(length, 0.001, clock), torch.zeros(length), method,
                        deadline=Deadline(at=10.0, beat=1e-3, clock=clock))
    assert res.stopped_by == "deadline" and res.iterations < length


@pytest.mark.parametrize("method", ["jacobi", "newton", "quasi_newton", "sequential"])
def test_solve_recurrence_projects_too(method):
    length, clock = 400, FakeClock()

    def step(s, u):
        clock.now += 2e-4
        return torch.tanh(2.5 * s + u)

    inputs = torch.randn(length, 1, 1, generator=torch.Generator().manual_seed(0))
    res = ffsolve.solve_recurrence(step, torch.zeros(1, 1), inputs, method,
                                   deadline=Deadline(at=30.0, beat=1e-3, clock=clock))
    assert res.stopped_by == "deadline" and not res.converged
    assert clock.now < 30.0


def test_progress_reads_the_rate_of_a_falling_change():
    from ffsolve.deadline import progress

    from ffsolve.deadline import TO_LAST_BITS as share

    # Nothing settled, the change falls 10x a step from 1 towards a floor of 1e-6: after two
    # steps five more are needed to reach the last bits, so two of seven of that share are done.
    assert progress(0.0, [1.0, 0.1], 1e-6) == pytest.approx(share * 2 / 7)
    assert progress(0.9, [1.0, 0.1], 1e-6) == 0.9  # the settled fraction when it is further
    assert progress(0.1, [1.0, 1.0], 1e-6) == 0.1  # a change that does not fall says nothing
    assert progress(0.1, [1.0, 1e-7], 1e-6) == share  # at the floor: the share is done
    # Past it, the run is projected to take as many steps again as it took to get there: the
    # progress grows with every step, up to 1 (then only the hard stop applies).
    assert progress(0.1, [1.0, 1e-7, 2e-7], 1e-6) == pytest.approx(share * 3 / 2)
    assert progress(0.1, [1.0, 1e-3, 1e-7, 2e-7, 1e-7], 1e-6) == pytest.approx(share * 5 / 3)
    assert progress(0.1, [1.0, 1e-7, 2e-7, 1e-7, 1e-7, 1e-7], 1e-6) == 1.0
    assert progress(0.1, [1.0], 1e-6) == 0.1  # one step has no rate
    # The faster of the last two rates: 10x then 2x -> 10x.
    assert progress(0.0, [10.0, 1.0, 0.5], 5e-6) == pytest.approx(share * 3 / (3 + 5))


def contractive_step(pause: float, clock: FakeClock):
    weights = torch.randn(8, 8, generator=torch.Generator().manual_seed(1)) * 0.3 / 8 ** 0.5

    def step(s, u):
        clock.now += pause
        return torch.tanh(s @ weights.T + u)
    return step


@pytest.mark.parametrize("method", ["jacobi", "quasi_newton"])
def test_a_contractive_recurrence_going_to_win_is_not_stopped(method):
    # Its error shrinks everywhere at once: almost nothing settles until the last steps, so the
    # settled prefix alone would project it far behind; the falling change says it will finish.
    import warnings

    clock = FakeClock()
    step = contractive_step(1e-3, clock)
    inputs = torch.randn(1000, 1, 8, generator=torch.Generator().manual_seed(0))
    s0 = torch.zeros(1, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ffsolve.NotBitwiseWarning)
        full = ffsolve.solve_recurrence(step, s0, inputs, method)
        seconds = clock.now  # the whole run's time on the fake clock: its steps' pauses
        assert full.iterations > 5
        clock.now = 0.0
        res = ffsolve.solve_recurrence(step, s0, inputs, method, deadline=Deadline(
            at=10 * seconds, beat=1.5 * seconds, clock=clock))
    assert res.converged and torch.equal(res.x, full.x)


def test_projections_are_asked_for_at_most_every_quarter_of_the_watch():
    # A fast step must not pay for the settled prefix (a reduction) on every call.
    deadline = started(1.0, beat=1.0)  # watched for 1 s > observe x beat = 0.1 s
    assert deadline.due()
    assert not deadline.due()  # the next is due 0.025 s later
    assert not started(0.05, beat=1.0).due()  # not watched long enough yet
    assert not Deadline(at=time.perf_counter() + 5).due()  # nothing to project
