"""ffsolve.autotune (method="auto"): pilots once per key, keeps the winner, answers an exact
request only with a bitwise run, keeps decisions in a file a later process reads, and races by
cooperative deadlines (no signals, any thread). No timing is asserted: which method wins depends
on the machine; what is checked is what any winner must satisfy."""

import json
import signal
import threading
import time

import numpy as np
import pytest
import torch

import ffsolve
from ffsolve import autotune
from ffsolve.recurrence import cells

T, BATCH = 48, 4


@pytest.fixture(autouse=True)
def fresh_decisions():
    autotune.configure(None)
    autotune.forget()
    yield
    autotune.configure(None)
    autotune.forget()


def _chain():
    g = torch.Generator().manual_seed(0)
    weights = torch.randn(T, T, generator=g).tril(-1) / T**0.5
    noise = torch.randn(T, BATCH, generator=g)

    def sample_step(x):
        return torch.tanh(weights @ x) + 0.1 * noise

    return sample_step


def test_auto_pilots_once_and_answers_with_the_sequential_bits():
    f, x0 = _chain(), torch.zeros(T, BATCH)
    reference = ffsolve.solve(f, x0, "sequential")
    first = ffsolve.solve(f, x0, "auto")
    assert first.autotune["piloted"] and first.autotune["first_call_s"] > 0
    assert set(first.autotune["candidates"]) == set(autotune.SOLVE_CANDIDATES)
    assert first.network_evaluations >= 2 * T  # the pilot's work: sequential twice at least
    second = ffsolve.solve(f, x0, "auto")
    assert not second.autotune["piloted"] and second.method == first.method
    assert second.autotune["chosen"] == first.method
    for res in (first, second):
        assert torch.equal(res.x, reference.x) and res.converged and res.iterations <= T


def test_an_exact_request_never_takes_a_faster_answer_that_is_not_bitwise():
    f, x0 = _chain(), torch.zeros(T, BATCH)
    reference = ffsolve.solve(f, x0, "sequential").x
    nudged = reference + 1e-6  # a "native path" that is instant but not the sequential bits
    res = autotune.solve_auto(f, x0, extra={"native": lambda: nudged}, key="nudged")
    assert res.method != "native" and torch.equal(res.x, reference)
    assert res.autotune["candidates"]["native"]["eligible"] is False
    loose = autotune.solve_auto(f, x0, extra={"native": lambda: nudged}, key="nudged-allowed",
                                allow_within_tolerance=1e-5)
    assert loose.autotune["candidates"]["native"]["eligible"] is True
    tight = autotune.solve_auto(f, x0, extra={"native": lambda: nudged}, key="nudged-tight",
                                allow_within_tolerance=1e-7)
    assert tight.autotune["candidates"]["native"]["eligible"] is False
    with pytest.raises(ValueError, match="allow_within_tolerance must be a max-abs distance"):
        autotune.solve_auto(f, x0, allow_within_tolerance=True)
    with pytest.raises(ValueError, match="takes no trace or deadline"):
        ffsolve.solve(f, x0, "auto", trace=True)
    with pytest.raises(ValueError, match="must include 'sequential'"):
        autotune.solve_auto(f, x0, candidates=("jacobi", "gs_jacobi"))


def test_recurrences_too_and_a_users_own_loop_can_win():
    cell = cells.random_gru(6, 3, seed=0)
    g = torch.Generator().manual_seed(1)
    s0, u = torch.zeros(2, 6), torch.randn(T, 2, 3, generator=g)
    loop = ffsolve.solve_recurrence(cell, s0, u, "sequential").x
    res = ffsolve.solve_recurrence(cell, s0, u, "auto")
    assert res.autotune["piloted"] and torch.equal(res.x, loop)
    own = autotune.solve_recurrence_auto(cell, s0, u, extra={"mine": lambda: loop.clone()},
                                         candidates=("sequential", "jacobi"), key="own-loop")
    assert torch.equal(own.x, loop)
    assert own.autotune["candidates"]["mine"]["eligible"] is True  # bitwise: it may win


def test_decisions_persist_in_a_file_and_replay_pilots_nothing(tmp_path):
    path = tmp_path / "decisions.json"
    f, x0 = _chain(), torch.zeros(T, BATCH)
    autotune.configure(path)
    chosen = ffsolve.solve(f, x0, "auto").method
    stored = json.loads(path.read_text())
    assert len(stored) == 1 and next(iter(stored.values()))["method"] == chosen
    autotune.forget()  # as a new process would start
    autotune.configure(path, replay=True)
    replayed = ffsolve.solve(f, x0, "auto")
    assert not replayed.autotune["piloted"] and replayed.method == chosen
    with pytest.raises(LookupError, match="no decision for the key"):
        ffsolve.solve(f, torch.zeros(T + 1, BATCH), "auto")
    path.write_text("{not json")
    autotune.forget()
    with pytest.raises(ValueError, match="not valid JSON"):
        autotune.configure(path)


def _halving(x):  # x_t = 0.5 x_{t-1} + 1, any length and dtype
    return np.concatenate([x[:1] * 0 + 1, 0.5 * x[:-1] + 1])


def test_the_key_separates_shapes_dtypes_and_tolerances():
    ffsolve.solve(_halving, np.zeros(T), "auto")
    ffsolve.solve(_halving, np.zeros(T), "auto")
    ffsolve.solve(_halving, np.zeros(T), "auto", tol=1e-3)
    ffsolve.solve(_halving, np.zeros(T, np.float32), "auto")
    ffsolve.solve(_halving, np.zeros(T + 1), "auto")
    keys = [json.loads(k) for k in autotune.decisions()]
    assert len(keys) == 4 and {k["tol"] for k in keys} == {0.0, 1e-3}


def test_no_signals_and_any_thread():
    previous = signal.getsignal(signal.SIGALRM)
    f, x0 = _chain(), torch.zeros(T, BATCH)
    results = []
    worker = threading.Thread(target=lambda: results.append(ffsolve.solve(f, x0, "auto")))
    worker.start()
    worker.join()
    assert results and results[0].converged and results[0].autotune["piloted"]
    assert signal.getsignal(signal.SIGALRM) is previous
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_slow_candidate_stops_at_the_deadline_instead_of_running_out():
    calls = []

    def chain(x):  # x_t = 0.5 x_{t-1} + 1: Jacobi needs about T calls here
        calls.append(None)
        if len(calls) > 2 * T:  # sequential's two runs (warm-up, timed) are done: Jacobi's turn
            time.sleep(0.05)  # each of its calls outlasts sequential's whole run (~1 ms)
        return np.concatenate([x[:1] * 0 + 1.0, 0.5 * x[:-1] + 1.0])

    res = autotune.solve_auto(chain, np.zeros(T), candidates=("sequential", "jacobi"), key="slow")
    assert res.method == "sequential" and res.converged
    assert res.autotune["candidates"]["jacobi"]["time_s"] is None  # stopped by the deadline
    assert len(calls) == 2 * T + 2  # Jacobi's warm-up and timed run: one call each, not ~T
