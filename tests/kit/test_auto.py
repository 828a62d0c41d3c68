"""`method: auto` in the experiments (ffsolve.kit.auto): the choice, eligibility (exact means
bitwise), the pilot once and then the chosen program alone, cooperative deadlines (no signals, any
thread), the record, and decisions kept in a file and replayed."""

import signal
import threading
import time

import numpy as np
import pytest

from ffsolve.deadline import TIE

import ffsolve
from ffsolve import autotune
from ffsolve.kit import Candidate, RunContext, Tolerance, measure, parse_run_name, write_runs
from ffsolve.kit.auto import (
    AutoSettings,
    Option,
    Pilot,
    accepts_deadline,
    add_auto,
    auto_candidate,
    auto_settings,
    choose,
    eligibility,
    loop_pilot,
    pilot_steps,
    run_pilot,
    split_auto,
    validate_auto,
)
from ffsolve.kit.harness import TimingSettings
from ffsolve.kit.runs import RunSpec, expand_runs

LENGTH = 12


def chain(length=LENGTH, batch=2):
    weights = np.tril(np.random.default_rng(0).normal(size=(length, length)), -1) / length
    bias = np.random.default_rng(1).normal(size=(length, batch))
    return (lambda x: np.tanh(weights @ x + bias)), np.zeros((length, batch))


def slow(name, seconds_per_call, calls=None, length=LENGTH, **kwargs):
    """A solver candidate whose map sleeps ``seconds_per_call``: its time is known in advance.
    Its program takes a deadline (as ffsolve.solve does); ``calls`` counts its runs."""
    f, x0 = chain(length)
    spec = parse_run_name(name)

    def g(x):
        time.sleep(seconds_per_call)
        return f(x)

    def program(deadline=None, max_iters=None):
        if calls is not None:
            calls.append(spec.name)
        return ffsolve.solve(g, x0, method=spec.method, block_size=spec.block_size,
                             max_iters=max_iters or spec.budget, tol=spec.stopping_tol(),
                             deadline=deadline)

    return Candidate(spec, program, **kwargs), program


@pytest.fixture(autouse=True)
def fresh_decisions():
    """Decisions kept in memory by one test never answer another's."""
    autotune.forget()
    yield
    autotune.forget()


# --------------------------------------------------------------------------- the pure choice


def test_picks_sequential_when_every_parallel_method_is_slower():
    choice = choose([Option("sequential", 1.0, True), Option("jacobi", 3.0, True),
                     Option("gs_jacobi_b4", None, True, "")], "sequential")
    assert choice.run == "sequential"
    assert "native sequential path" in choice.reason and "jacobi 3 s" in choice.reason
    assert "gs_jacobi_b4 stopped at its deadline" in choice.reason


def test_picks_the_parallel_method_when_it_is_faster_and_says_by_how_much():
    choice = choose([Option("sequential", 2.0, True), Option("jacobi", 0.1, True),
                     Option("gs_jacobi_b4", 0.5, True)], "sequential")
    assert choice.run == "jacobi" and choice.seconds == 0.1
    assert choice.reason.startswith("jacobi: 0.1 s, 20x faster than sequential's 2 s")
    # The baseline need not have a time (cut at a deadline, or not eligible).
    assert choose([Option("sequential", None, True), Option("jacobi", 0.1, True)], "sequential").run == "jacobi"
    with pytest.raises(ValueError, match="no option may answer"):
        choose([Option("sequential", None, True), Option("jacobi", None, True)], "sequential")


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


def test_eligibility_exact_means_bitwise_unless_allowed():
    tolerance = Tolerance(1e-6, 0.0, "test")
    assert eligibility(parse_run_name("gs_jacobi_b4"))[0]
    assert eligibility(parse_run_name("sequential_cache"))[0]  # declared bitwise: its bits are checked
    # Only within a declared tolerance: not an answer to an exact run ...
    eligible, why = eligibility(parse_run_name("sequential_cache"), tolerance=tolerance)
    assert not eligible and "timing.auto_allow_within_tolerance" in why
    assert not eligibility(parse_run_name("scan_odd_even"), tolerance=tolerance)[0]
    # ... unless the caller allows it, or the run asks for a tolerance anyway.
    assert eligibility(parse_run_name("scan_odd_even"), tolerance=tolerance, allow_within_tolerance=True)[0]
    assert eligibility(parse_run_name("sequential_cache"), run_tol=1e-4, tolerance=tolerance)[0]
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
    assert pilot_steps(784) == 16 and pilot_steps(10) == 2 and pilot_steps(1) == 1
    with pytest.raises(ValueError, match="scale must be a positive"):
        Pilot(lambda: None, 0.0)
    assert pilot_steps(1000) == 20 and pilot_steps(150) == 4  # even: 3 rounds up


def test_a_loop_pilot_separates_a_calls_fixed_cost_from_its_steps():
    # t(k) = 0.2 s + k x 0.01 s: 10 steps take 0.3 s, 20 take 0.4 s; 1,000 steps take 10.2 s,
    # where scaling the 20 steps' time by 50 would say 20 s.
    seconds = {10: 0.3, 20: 0.4}
    pilot = loop_pilot(lambda k: k, steps=20, length=1000)
    predicted, outs = pilot.predict(lambda program: (seconds[program()], program()))
    assert predicted == pytest.approx(10.2) and outs == [20, 10]
    # Noise that makes the longer slice no slower: the plain scaling.
    predicted, _ = pilot.predict(lambda program: (0.4, program()))
    assert predicted == pytest.approx(50 * 0.4)


def test_a_program_takes_a_deadline_only_by_name():
    assert accepts_deadline(lambda deadline=None: None)
    assert accepts_deadline(lambda *, deadline: None)
    assert not accepts_deadline(lambda: None)
    assert not accepts_deadline(lambda **kwargs: None)  # may not honour it


# --------------------------------------------------------------------------- pilot once, keep it


def test_the_first_call_pilots_and_every_later_call_runs_the_chosen_program_alone(tmp_path):
    calls = []
    sequential, _ = slow("sequential", 0.004, calls)             # 12 calls: ~50 ms
    jacobi, _ = slow("jacobi", 0.0005, calls)                     # <= 12 calls: ~6 ms
    truncated, _ = slow("jacobi_k2", 0.0, calls)                  # fastest, but truncated
    pool = [sequential, jacobi, truncated]
    auto = auto_candidate(pool)
    found = measure(pool + [auto], repeats=3, warmup=1)
    info = auto.extra["auto"]
    validate_auto(info)
    assert info["chosen"] == "jacobi" and info["decided_by"] == "pilot" and info["calls"] == 4
    # The harness's warm-up round called every run once, then auto piloted: sequential and
    # jacobi ran (truncated never: it cannot answer); the reference's output came from the
    # harness's own call, so the pilot did not need sequential in full first.
    warm, pilot, timed = calls[:3], calls[3:5], calls[5:]
    assert warm == ["sequential", "jacobi", "jacobi_k2"]
    assert pilot == ["sequential", "jacobi"]  # no slice: the baseline's full time is the deadline
    tried = {p["run"]: p for p in info["pilots"]}
    assert tried["sequential"]["finished"] and tried["sequential"]["deadline_s"] is None
    # Its hard stop is the best time less the tie: a tie would not change the choice.
    assert tried["jacobi"]["deadline_s"] == pytest.approx(tried["sequential"]["seconds"] / (1 + TIE))
    assert tried["jacobi_k2"]["seconds"] is None and not tried["jacobi_k2"]["eligible"]
    # Later calls: auto runs jacobi alone (3 timed rounds: 3 x (3 runs + auto's jacobi)).
    assert sorted(timed) == sorted(["sequential", "jacobi", "jacobi_k2", "jacobi"] * 3)
    assert found["auto"].bitwise_equal and found["auto"].result.iterations == found["jacobi"].result.iterations
    # Steady state apart from the first call: the first call (pilot included) took longer.
    assert info["first_call_s"] > info["pilot_s"] > 0
    assert info["first_call_network_evaluations"] > found["auto"].result.network_evaluations
    paths = {name: tmp_path / name / "metrics.json" for name in found}
    records = write_runs(found, RunContext("test", "chain", 0, "cpu", 2), paths)
    assert records["auto"]["method"] == "auto" and records["auto"]["auto"]["chosen"] == "jacobi"
    assert records["auto"]["tolerance"] is None
    assert records["auto"]["network_evaluations"] == records["jacobi"]["network_evaluations"]


def test_without_a_warm_up_round_the_harness_prepares_auto_untimed():
    calls = []
    sequential, _ = slow("sequential", 0.0, calls)
    jacobi, _ = slow("jacobi", 0.0, calls)
    auto = auto_candidate([sequential, jacobi])
    found = measure([sequential, jacobi, auto], repeats=2, warmup=0)
    info = auto.extra["auto"]
    assert info["calls"] == 3  # prepare (the pilot), then one call per timed round
    # No harness call had given the reference's output yet: the pilot ran sequential first.
    assert info["pilots"][0]["run"] == "sequential" and info["pilots"][0]["deadline_s"] is None
    assert found["auto"].bitwise_equal


def test_a_slow_candidate_is_stopped_at_the_deadline():
    sequential, _ = slow("sequential", 0.002)                     # ~25 ms in all
    jacobi, _ = slow("jacobi", 0.05)                              # ~0.6 s to the end
    start = time.perf_counter()
    outcome = run_pilot([sequential, jacobi], "sequential", reference_result=sequential.program())
    spent = time.perf_counter() - start
    assert outcome.choice.run == "sequential"
    record = {r["run"]: r for r in outcome.records}["jacobi"]
    assert record["accepts_deadline"] and not record["finished"] and "stopped at its deadline" in record["why"]
    # Cut after the step in progress: one or two 50 ms steps, never its 0.6 s.
    assert record["seconds"] < 0.3 and spent < 0.5
    assert "jacobi stopped at its deadline" in outcome.choice.reason


def test_a_baseline_slice_orders_the_parallel_candidates_first_and_bounds_them():
    sequential, seq_program = slow("sequential", 0.004)           # ~50 ms
    jacobi, _ = slow("jacobi", 0.05)                              # ~0.6 s
    gs, _ = slow("gs_jacobi_b4", 0.05)
    pilot = loop_pilot(lambda k: seq_program(max_iters=k), 3, LENGTH)
    outcome = run_pilot([sequential, jacobi, gs], "sequential", baseline_pilot=pilot,
                        reference_result=sequential.program())
    assert [r["run"] for r in outcome.records] == ["jacobi", "gs_jacobi_b4", "sequential"]
    first, second, base = outcome.records
    assert first["deadline_s"] == pytest.approx(1.25 * outcome.predicted_baseline_s / (1 + TIE))
    assert not first["finished"] and not second["finished"] and base["finished"]
    assert base["deadline_s"] is None and outcome.choice.run == "sequential"


def test_a_baseline_whose_slice_predicts_a_clear_loss_is_not_run():
    calls = []
    sequential, seq_program = slow("sequential", 0.01, calls)    # ~0.12 s
    jacobi, _ = slow("jacobi", 0.0005, calls)                     # a few ms
    pilot = loop_pilot(lambda k: seq_program(max_iters=k), 3, LENGTH)
    reference = sequential.program()
    calls.clear()
    outcome = run_pilot([sequential, jacobi], "sequential", baseline_pilot=pilot, reference_result=reference)
    assert outcome.choice.run == "jacobi" and calls == ["sequential", "jacobi"]  # the slice, then jacobi
    skipped = {r["run"]: r for r in outcome.records}["sequential"]
    assert skipped["seconds"] is None and skipped["why"].startswith("not run: its slice predicts")
    assert "sequential not run: its slice predicts" in outcome.choice.reason


def test_a_program_without_a_deadline_runs_to_the_end():
    sequential, _ = slow("sequential", 0.0)
    f, x0 = chain()
    jacobi = Candidate(RunSpec("jacobi"), lambda: (time.sleep(0.05), ffsolve.solve(f, x0, "jacobi"))[1])
    outcome = run_pilot([sequential, jacobi], "sequential", reference_result=sequential.program())
    record = {r["run"]: r for r in outcome.records}["jacobi"]
    assert not record["accepts_deadline"] and record["finished"] and record["seconds"] >= 0.05
    assert outcome.choice.run == "sequential"


# --------------------------------------------------------------------------- no signals, any thread


def test_auto_uses_no_signals_and_leaves_the_callers_timers_alone(monkeypatch):
    def handler(signum, frame):  # pragma: no cover - never fires within the test
        raise AssertionError("the caller's alarm fired")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 30.0)
    try:
        for name in ("signal", "setitimer", "alarm"):
            monkeypatch.setattr(signal, name, lambda *a, name=name: pytest.fail(f"auto called signal.{name}"))
        sequential, _ = slow("sequential", 0.002)
        jacobi, _ = slow("jacobi", 0.05)
        auto = auto_candidate([sequential, jacobi])
        auto.program()
        auto.program()
        monkeypatch.undo()
        assert auto.extra["auto"]["chosen"] == "sequential"
        assert signal.getsignal(signal.SIGALRM) is handler
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining <= 30.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_auto_works_from_a_thread_that_is_not_the_main_one():
    sequential, _ = slow("sequential", 0.01)                      # ~0.12 s
    jacobi, _ = slow("jacobi", 0.001)
    gs, _ = slow("gs_jacobi_b4", 0.2)                             # cut at jacobi's time
    auto = auto_candidate([sequential, jacobi, gs])
    out = {}

    def work():
        try:
            start = time.perf_counter()
            out["first"] = auto.program()
            out["first_s"] = time.perf_counter() - start
            out["second"] = auto.program()
        except BaseException as err:  # pragma: no cover - reported below
            out["error"] = err

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert "error" not in out and not thread.is_alive()
    info = auto.extra["auto"]
    assert info["chosen"] == "jacobi" and out["second"].method == "jacobi"
    # sequential in full (the reference), jacobi, then gs_jacobi cut at jacobi's time: not 2.4 s.
    assert {p["run"]: p["finished"] for p in info["pilots"]}["gs_jacobi_b4"] is False
    assert out["first_s"] < 1.5


# --------------------------------------------------------------------------- exact means bitwise


def _fast_but_off(offset):
    f, x0 = chain()

    def program():
        result = ffsolve.solve(f, x0, method="jacobi")
        result.x = result.x + offset
        return result

    return program


@pytest.mark.parametrize("allow", [False, True])
def test_an_exact_auto_run_is_never_answered_within_tolerance_unless_allowed(allow):
    sequential, _ = slow("sequential", 0.01)                      # ~0.12 s, the reference
    tolerance = Tolerance(1e-6, 0.0, "test: a fast path that rounds differently")
    near = Candidate(RunSpec("jacobi"), _fast_but_off(1e-9), tolerance=tolerance)
    auto = auto_candidate([sequential, near], allow_within_tolerance=allow)
    result = auto.program()
    info = auto.extra["auto"]
    if allow:
        assert info["chosen"] == "jacobi" and auto.tolerance is tolerance
        assert "within its declared tolerance" in {p["run"]: p["why"] for p in info["pilots"]}["jacobi"]
    else:
        assert info["chosen"] == "sequential" and auto.tolerance is None
        assert "timing.auto_allow_within_tolerance" in info["reason"]
        assert result.method == "sequential"


def test_a_run_that_claims_bitwise_but_is_not_never_answers_an_exact_run():
    sequential, _ = slow("sequential", 0.01)
    liar = Candidate(RunSpec("jacobi"), _fast_but_off(1e-12))    # no tolerance: must be bitwise
    wrong = Candidate(RunSpec("gs_jacobi", 4), _fast_but_off(1e-3), tolerance=Tolerance(1e-6, 0.0, "test"))
    auto = auto_candidate([sequential, liar, wrong], allow_within_tolerance=True)
    auto.program()
    info = auto.extra["auto"]
    why = {p["run"]: p["why"] for p in info["pilots"]}
    assert info["chosen"] == "sequential"
    assert "not the reference's bits" in why["jacobi"] and "outside its declared tolerance" in why["gs_jacobi_b4"]


# --------------------------------------------------------------------------- decisions kept


def test_decisions_are_written_to_a_file_and_replayed_without_a_pilot(tmp_path):
    path = tmp_path / "autotune" / "chain.json"
    key = {"experiment": "test", "dataset": "chain", "shape": (LENGTH, 2), "dtype": "float64"}
    calls = []
    sequential, _ = slow("sequential", 0.004, calls)
    jacobi, _ = slow("jacobi", 0.0005, calls)
    first = auto_candidate([sequential, jacobi], key=key, decisions=str(path))
    first.program()
    assert first.extra["auto"]["decided_by"] == "pilot" and path.exists()
    stored = autotune._read(path)
    assert len(stored) == 1 and next(iter(stored.values()))["method"] == "jacobi"

    autotune.forget()  # a later process: nothing in memory, only the file
    calls.clear()
    again = auto_candidate([sequential, jacobi], key=key, decisions=str(path), replay=True)
    again.program()
    info = again.extra["auto"]
    assert info["decided_by"] == "stored" and info["replay"] and info["chosen"] == "jacobi"
    assert calls == ["jacobi"] and info["pilot_s"] == 0.0  # the decision alone, no pilot
    validate_auto(info)

    autotune.forget()
    other = auto_candidate([sequential, jacobi], key={**key, "dataset": "other"}, decisions=str(path),
                           replay=True)
    with pytest.raises(LookupError, match="no decision for the key"):
        other.program()
    with pytest.raises(ValueError, match="replay needs a key"):
        auto_candidate([sequential, jacobi], replay=True)


def test_a_stored_decision_answers_a_later_candidate_with_the_same_key_in_memory():
    calls = []
    sequential, _ = slow("sequential", 0.004, calls)
    jacobi, _ = slow("jacobi", 0.0005, calls)
    key = {"experiment": "test", "dataset": "memory"}
    auto_candidate([sequential, jacobi], key=key).program()
    calls.clear()
    later = auto_candidate([sequential, jacobi], key=key)
    later.program()
    assert later.extra["auto"]["decided_by"] == "stored" and calls == ["jacobi"]
    # Another tolerance rule is another key: piloted again.
    fresh = auto_candidate([sequential, jacobi], key=key, allow_within_tolerance=True)
    fresh.program()
    assert fresh.extra["auto"]["decided_by"] == "pilot"


# --------------------------------------------------------------------------- wiring


def test_wiring_helpers_split_and_add_auto_runs():
    specs = expand_runs(["sequential", "jacobi", "auto"], tols={"jacobi": [1e-2], "auto": [1e-2]})
    plain, autos = split_auto(specs)
    assert [s.name for s in plain] == ["sequential", "jacobi", "jacobi_t1e-02"]
    assert [s.name for s in autos] == ["auto", "auto_t1e-02"]
    f, x0 = chain()
    pool = [Candidate(s, lambda s=s: ffsolve.solve(f, x0, method=s.method, tol=s.stopping_tol())) for s in plain]
    found = add_auto(pool, autos, settings=AutoSettings())
    assert [c.name for c in found] == ["sequential", "jacobi", "jacobi_t1e-02", "auto", "auto_t1e-02"]
    found[-1].program()
    pilots = {p["run"]: p["eligible"] for p in found[-1].extra["auto"]["pilots"]}
    assert pilots == {"sequential": True, "jacobi": True, "jacobi_t1e-02": True}
    other = Candidate(RunSpec("jacobi_top5"), lambda: ffsolve.solve(f, x0, method="jacobi"),
                      extra={"quantity": "time_to_top5"})
    picked = auto_candidate(pool + [other])
    picked.program()
    assert "jacobi_top5" not in {p["run"] for p in picked.extra["auto"]["pilots"]}
    with pytest.raises(ValueError, match="method must be 'auto'"):
        auto_candidate(pool, run="jacobi")
    with pytest.raises(ValueError, match="needs the native sequential path 'bptt'"):
        auto_candidate(pool, baseline="bptt")
    trained = [Candidate(c.run, c.program, extra={"quantity": "train_200_steps"}) for c in pool[:2]]
    same = auto_candidate(trained)
    same.program()
    assert same.extra["auto"]["chosen"] in ("sequential", "jacobi")
    assert same.extra["quantity"] == "train_200_steps"
    with pytest.raises(ValueError, match="required property"):
        validate_auto({"chosen": 3})


def test_the_timing_settings_reach_auto():
    timing = TimingSettings(auto_allow_within_tolerance=True, auto_replay=False)
    settings = auto_settings(timing, "results/autotune/made/mnist.json")
    assert settings == AutoSettings(True, "results/autotune/made/mnist.json", False)
    assert auto_settings(TimingSettings()) == AutoSettings()


def test_solver_demo_auto_picks_its_parallel_winner_and_records_the_first_call():
    from ffsolve.experiments.solver_demo.experiment import MeasureSettings
    from ffsolve.experiments.solver_demo.system import candidates
    from ffsolve.kit.settings import settings_from

    settings = settings_from(MeasureSettings, {"length": 64, "batch": 4, "coupling": 1.0, "tol": 0.0,
                                        "methods": ["sequential", "jacobi", "auto"], "block_sizes": []},
                             "solver_demo")
    found = candidates(settings, seed=3)
    measured = measure(found, repeats=1, warmup=1)
    info = measured["auto"].candidate.extra["auto"]
    assert measured["auto"].bitwise_equal and info["first_call_s"] > 0
    assert info["key"]["problem"]["experiment"] == "solver_demo"
