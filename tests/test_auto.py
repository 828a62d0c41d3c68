"""`method: auto`: the choice on synthetic timings, eligibility, racing, the pilot's cost inside the
reported time, and the record."""

import time

import numpy as np
import pytest

import ffsolve
from ffsolve.kit import (
    Candidate,
    RunContext,
    Tolerance,
    measure,
    parse_run_name,
    write_runs,
)
from ffsolve.kit.auto import (
    Option,
    Pilot,
    add_auto,
    auto_candidate,
    choose,
    eligibility,
    loop_pilot,
    pilot_steps,
    run_pilot,
    split_auto,
    validate_auto,
)
from ffsolve.kit.runs import RunSpec, expand_runs


def chain(length=12, batch=2):
    weights = np.tril(np.random.default_rng(0).normal(size=(length, length)), -1) / length
    bias = np.random.default_rng(1).normal(size=(length, batch))
    return (lambda x: np.tanh(weights @ x + bias)), np.zeros((length, batch))


def slow(name, seconds_per_call, length=12, **kwargs):
    """A solver candidate whose map sleeps ``seconds_per_call``: its time is known in advance."""
    f, x0 = chain(length)
    spec = parse_run_name(name)

    def g(x):
        time.sleep(seconds_per_call)
        return f(x)

    def program(max_iters=None):
        return ffsolve.solve(g, x0, method=spec.method, block_size=spec.block_size,
                             max_iters=max_iters or spec.budget, tol=spec.stopping_tol())

    return Candidate(spec, program, **kwargs), program


# --------------------------------------------------------------------------- the pure choice


def test_picks_sequential_when_every_parallel_method_is_slower():
    choice = choose([Option("sequential", 1.0, True), Option("jacobi", 3.0, True),
                     Option("gs_jacobi_b4", None, True, "raced out")], "sequential")
    assert choice.run == "sequential"
    assert "native sequential path" in choice.reason and "jacobi 3 s" in choice.reason
    assert "gs_jacobi_b4 raced out" in choice.reason


def test_picks_the_parallel_method_when_it_is_faster_and_says_by_how_much():
    choice = choose([Option("sequential", 2.0, True), Option("jacobi", 0.1, True),
                     Option("gs_jacobi_b4", 0.5, True)], "sequential")
    assert choice.run == "jacobi" and choice.seconds == 0.1
    assert choice.reason.startswith("jacobi: 0.1 s, 20x faster than sequential's 2 s")


def test_a_truncated_budget_never_wins_an_exact_run_however_fast():
    options = [Option("sequential", 1.0, True)]
    for name in ("jacobi_k3", "jacobi_t1e-02"):
        eligible, why = eligibility(parse_run_name(name), run_tol=0.0)
        assert not eligible
        options.append(Option(name, 1e-6, eligible, why))
    eligible, why = eligibility(parse_run_name("jacobi_k3"), run_tol=1e-2)
    assert not eligible and "truncated budget of 3 steps" in why
    choice = choose(options, "sequential")
    assert choice.run == "sequential" and "jacobi_k3 not eligible (truncated budget" in choice.reason


def test_eligibility_by_tolerance():
    assert eligibility(parse_run_name("sequential_cache"))[0]
    assert eligibility(parse_run_name("gs_jacobi_b4"))[0]
    assert eligibility(parse_run_name("jacobi_t1e-04"), run_tol=1e-4) == (True, "stops at the run's tolerance 0.0001")
    assert not eligibility(parse_run_name("jacobi_t1e-02"), run_tol=1e-4)[0]  # looser than asked
    assert eligibility(parse_run_name("jacobi"), run_tol=1e-4)[0]  # exact meets any tolerance
    assert not eligibility(parse_run_name("auto"))[0]
    assert eligibility(parse_run_name("jacobi_tol"))[0]  # the name says nothing ...
    assert eligibility(parse_run_name("jacobi_tol"), inexact=["jacobi_tol"]) == (
        False, "declared inexact by the experiment (it stops short of the exact answer)")


def test_ties_are_deterministic_and_keep_the_earlier_option():
    options = [Option("sequential", 1.0, True), Option("jacobi", 1.0, True), Option("gs_jacobi_b4", 1.0, True)]
    assert {choose(options, "sequential").run for _ in range(5)} == {"sequential"}
    assert choose(options[1:] + options[:1], "sequential").run == "jacobi"
    with pytest.raises(ValueError, match="baseline 'bptt' is not among"):
        choose(options, "bptt")


def test_a_loop_pilot_extrapolates_by_the_step_count():
    pilot = loop_pilot(lambda k: k, steps=5, length=100)
    assert pilot.scale == 20 and pilot.program() == 5
    assert pilot_steps(784) == 39 and pilot_steps(10) == 2 and pilot_steps(1) == 1
    with pytest.raises(ValueError, match="scale must be a positive"):
        Pilot(lambda: None, 0.0)


# --------------------------------------------------------------------------- the pilot and the race


def test_the_race_stops_a_losing_candidate_and_caps_the_pilot_cost():
    sequential, seq_program = slow("sequential", 0.01)          # 12 steps: 0.12 s
    jacobi, _ = slow("jacobi", 0.2)                              # at least 0.2 s: never finishes
    pilot = loop_pilot(lambda k: seq_program(max_iters=k), steps=3, length=12)
    pilot.program()  # warm (first calls pay for lazy imports)
    start = time.perf_counter()
    outcome = run_pilot([sequential, jacobi], "sequential", baseline_pilot=pilot, pilot_budget=0.25, race=True)
    spent = time.perf_counter() - start
    assert outcome.choice.run == "sequential"
    assert outcome.predicted_sequential_s == pytest.approx(0.12, rel=0.5)
    raced = outcome.records[1]
    assert raced["run"] == "jacobi" and not raced["finished"] and raced["predicted_s"] is None
    # The baseline slice (~0.03 s) plus at most a quarter of the predicted 0.12 s, plus slack.
    assert spent < 0.03 + 0.25 * outcome.predicted_sequential_s + 0.15  # slack: a shared machine
    assert "jacobi raced out" in outcome.choice.reason


def test_an_alarm_wrapped_by_c_code_still_counts_as_a_lost_race():
    """An alarm landing inside a C function that calls back into Python surfaces as a
    SystemError caused by it (seen under jnp.zeros); that is a lost race, not a crash. Any other
    error still propagates."""
    from ffsolve.kit import auto

    def wrapped():
        try:
            time.sleep(2)
        except auto._RaceLost as err:
            raise SystemError("returned a result with an exception set") from err

    out, seconds, finished = auto._raced(wrapped, 0.05, race=True)
    assert out is None and not finished and seconds < 1.5

    def broken():
        raise SystemError("not ours")

    with pytest.raises(SystemError, match="not ours"):
        auto._raced(broken, 1.0, race=True)


def test_a_warm_up_pilot_shares_the_budget_among_unknown_candidates():
    sequential, seq_program = slow("sequential", 0.01)          # 0.12 s
    seq_program(max_iters=1)
    a, _ = slow("jacobi", 0.05)
    b, _ = slow("gs_jacobi_b4", 0.05)
    pilot = loop_pilot(lambda k: seq_program(max_iters=k), steps=6, length=12)
    shared = run_pilot([sequential, a, b], "sequential", baseline_pilot=pilot, pilot_budget=1.0,
                       race=True, share_unknown=True)
    first, second = shared.records[1:]
    assert not first["finished"] and not second["finished"]
    # Each had about half of the predicted 0.12 s (plus up to one 0.05 s step of overshoot).
    assert first["pilot_s"] < 0.5 * shared.predicted_sequential_s + 0.06


def test_the_race_runs_the_fastest_known_first():
    sequential, _ = slow("sequential", 0.005)
    first, _ = slow("gs_jacobi_b4", 0.003)
    second, _ = slow("jacobi", 0.0005)
    outcome = run_pilot([sequential, first, second], "sequential", race=False,
                        known={"jacobi": 0.01, "gs_jacobi_b4": 0.2})
    assert [r["run"] for r in outcome.records] == ["sequential", "jacobi", "gs_jacobi_b4"]
    assert outcome.choice.run == "jacobi"


def test_auto_in_the_harness_counts_the_pilot_and_keeps_one_choice(tmp_path):
    sequential, seq_program = slow("sequential", 0.004)          # 48 ms
    jacobi, _ = slow("jacobi", 0.002)                            # about 12 calls on this chain: 24 ms?
    truncated, _ = slow("jacobi_k2", 0.0001)                     # fastest, but truncated
    pool = [sequential, jacobi, truncated]
    auto = auto_candidate(pool, baseline_pilot=loop_pilot(lambda k: seq_program(max_iters=k), 3, 12),
                          pilot_budget=0.5)
    found = measure(pool + [auto], repeats=3, warmup=1)
    info = auto.extra["auto"]
    validate_auto(info)
    chosen = info["chosen"]
    assert chosen in ("sequential", "jacobi") and chosen != "jacobi_k2"
    assert found["auto"].bitwise_equal and found["auto"].result.iterations == found[chosen].result.iterations
    assert info["calls"] == 4 and len(info["pilot_overhead_s"]) == 4  # warm-up + 3 timed calls
    # The pilot's cost is inside the auto run's reported time: every timed call (after the
    # warm-up call) took at least the pilot overhead it recorded.
    assert all(t >= o > 0 for t, o in zip(found["auto"].timing.times_s, info["pilot_overhead_s"][1:]))
    assert info["pilots"][0]["run"] == "sequential" and info["pilots"][0]["scale"] == 4
    assert {p["run"]: p["eligible"] for p in info["pilots"]}["jacobi_k2"] is False
    paths = {name: tmp_path / name / "metrics.json" for name in found}
    records = write_runs(found, RunContext("test", "chain", 0, "cpu", 2), paths)
    assert records["auto"]["method"] == "auto" and records["auto"]["auto"]["chosen"] == chosen
    assert records["auto"]["tolerance"] is None


def test_auto_picks_parallel_when_it_wins_and_reuses_its_pilot_output():
    sequential, seq_program = slow("sequential", 0.01, length=24)   # 0.24 s
    f, x0 = chain(24)
    calls = []

    def fast():
        calls.append(1)
        return ffsolve.solve(f, x0, method="jacobi")

    tolerance = Tolerance(1e-6, 0.0, "test: a fast path that may round differently")
    jacobi = Candidate(RunSpec("jacobi"), fast, tolerance=tolerance)
    auto = auto_candidate([sequential, jacobi],
                          baseline_pilot=loop_pilot(lambda k: seq_program(max_iters=k), 2, 24),
                          pilot_budget=0.5)
    auto.program()  # the first call pilots twice (a warm-up pilot, then the deciding one)
    assert auto.extra["auto"]["chosen"] == "jacobi" and len(calls) == 2
    result = auto.program()
    assert len(calls) == 3  # the race's run is the answer: jacobi ran once in this call
    assert result.method == "jacobi" and auto.tolerance is tolerance
    assert "faster than sequential's" in auto.extra["auto"]["reason"]
    assert auto.extra["auto"]["pilot_fraction"] < 0.5


def test_a_later_pilot_that_disagrees_is_recorded_not_followed():
    state = {"slow": False}
    f, x0 = chain()

    def sequential_program():
        return ffsolve.solve(f, x0, method="sequential")

    def jacobi_program():
        if state["slow"]:
            time.sleep(0.05)
        return ffsolve.solve(f, x0, method="jacobi")

    pool = [Candidate(RunSpec("sequential"), lambda: (time.sleep(0.02), sequential_program())[1]),
            Candidate(RunSpec("jacobi"), jacobi_program)]
    auto = auto_candidate(pool, pilot_budget=5.0, race=False)
    first = auto.program()
    state["slow"] = True
    second = auto.program()
    info = auto.extra["auto"]
    assert info["chosen"] == "jacobi" and first.iterations == second.iterations
    assert info["disagreements"] == ["call 2: the pilot would choose sequential; kept jacobi"]


def test_wiring_helpers_split_and_add_auto_runs():
    specs = expand_runs(["sequential", "jacobi", "auto"], tols={"jacobi": [1e-2], "auto": [1e-2]})
    plain, autos = split_auto(specs)
    assert [s.name for s in plain] == ["sequential", "jacobi", "jacobi_t1e-02"]
    assert [s.name for s in autos] == ["auto", "auto_t1e-02"]
    f, x0 = chain()
    pool = [Candidate(s, lambda s=s: ffsolve.solve(f, x0, method=s.method, tol=s.stopping_tol())) for s in plain]
    found = add_auto(pool, autos, race=False)
    assert [c.name for c in found] == ["sequential", "jacobi", "jacobi_t1e-02", "auto", "auto_t1e-02"]
    found[-1].program()
    pilots = {p["run"]: p["eligible"] for p in found[-1].extra["auto"]["pilots"]}
    assert pilots == {"sequential": True, "jacobi": True, "jacobi_t1e-02": True}
    other = Candidate(RunSpec("jacobi_top5"), lambda: ffsolve.solve(f, x0, method="jacobi"),
                      extra={"quantity": "time_to_top5"})
    picked = auto_candidate(pool + [other], race=False)
    picked.program()
    assert "jacobi_top5" not in {p["run"] for p in picked.extra["auto"]["pilots"]}
    with pytest.raises(ValueError, match="method must be 'auto'"):
        auto_candidate(pool, run="jacobi")
    with pytest.raises(ValueError, match="needs the native sequential path 'bptt'"):
        auto_candidate(pool, baseline="bptt")
    trained = [Candidate(c.run, c.program, extra={"quantity": "train_200_steps"}) for c in pool[:2]]
    same = auto_candidate(trained, race=False)
    same.program()
    assert same.extra["auto"]["chosen"] in ("sequential", "jacobi")
    assert same.extra["quantity"] == "train_200_steps"
    with pytest.raises(ValueError, match="required property"):
        validate_auto({"chosen": 3})


def test_the_pilot_budget_is_a_timing_setting_each_experiment_hands_to_auto():
    # solver_demo's Jacobi wins by about 7x: a budget of 0.1 may race it out, a budget of 1 lets
    # it finish; either way the record says which budget was used.
    from ffsolve.experiments.solver_demo.experiment import Settings, candidates
    from ffsolve.kit.settings import settings_from

    settings = settings_from(Settings, {"length": 64, "batch": 4, "coupling": 1.0, "tol": 0.0,
                                        "methods": ["sequential", "jacobi", "auto"], "block_sizes": []},
                             "solver_demo")
    from ffsolve.kit.harness import TimingSettings

    assert TimingSettings().auto_pilot_budget == 0.1
    found = candidates(settings, seed=3, pilot_budget=1.0)
    measured = measure(found, repeats=1, warmup=0)
    assert measured["auto"].candidate.extra["auto"]["pilot_budget"] == 1.0
    assert measured["auto"].bitwise_equal
