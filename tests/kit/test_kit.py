"""The shared kit: the harness times what it checks, records keep one meaning, names and seeds
are stable, settings and files fail loudly."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import ffsolve
from ffsolve.kit import (
    Candidate,
    RecordError,
    RunContext,
    Tolerance,
    expand_runs,
    gather_summary,
    measure,
    parse_run_name,
    read_summary,
    run_name,
    seed_stream,
    settings_from,
    validate_record,
    write_runs,
)
from ffsolve.kit.harness import TimingSettings
from ffsolve.kit.io import write_json, write_npz
from ffsolve.kit.runs import RunSpec, exact_run_names, format_tol
from ffsolve.kit.settings import SettingsError
from ffsolve.kit.tables import (
    headline_markdown,
    headline_rows,
    load_paper,
    runs_table,
    side_by_side,
    speedup,
    speedups_markdown,
)

ROOT = Path(__file__).resolve().parents[2]


def chain(length=12, batch=2):
    weights = np.tril(np.random.default_rng(0).normal(size=(length, length)), -1) / length
    bias = np.random.default_rng(1).normal(size=(length, batch))
    return (lambda x: np.tanh(weights @ x + bias)), np.zeros((length, batch))


def solver_candidate(name, f, x0, **kwargs):
    spec = parse_run_name(name)
    return Candidate(spec, lambda: ffsolve.solve(f, x0, method=spec.method,
                                                 block_size=spec.block_size), **kwargs)


class FakeClock:
    """A clock that only the programs advance, so every timing is known exactly."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_repeats_are_interleaved_round_robin_with_rotating_order():
    calls = []
    f, x0 = chain()

    def program(name):
        def run():
            calls.append(name)
            return ffsolve.solve(f, x0, method="sequential" if name == "sequential" else "jacobi")
        return run

    candidates = [Candidate(parse_run_name(n), program(n)) for n in ("sequential", "jacobi", "jacobi_k3")]
    measure(candidates, repeats=3, warmup=1)
    assert calls == ["sequential", "jacobi", "jacobi_k3",            # warm-up round
                     "sequential", "jacobi", "jacobi_k3",            # round 1
                     "jacobi", "jacobi_k3", "sequential",            # round 2, rotated
                     "jacobi_k3", "sequential", "jacobi"]            # round 3


def test_timings_come_from_the_timed_calls_and_share_one_session():
    clock = FakeClock()
    f, x0 = chain()
    costs = {"sequential": 2.0, "jacobi": 0.5}

    def program(name):
        def run():
            clock.now += costs[name]
            return ffsolve.solve(f, x0, method=name)
        return run

    found = measure([Candidate(n, program(n)) for n in costs], repeats=4, warmup=0, clock=clock)
    assert found["sequential"].timing.median_s == pytest.approx(2.0)
    assert found["jacobi"].timing.median_s == pytest.approx(0.5)
    assert found["jacobi"].session == found["sequential"].session != ""
    assert found["jacobi"].interleaved_with == ("sequential",)


def test_fast_programs_run_several_times_per_timed_sample():
    clock = FakeClock()
    f, x0 = chain()
    calls = {"sequential": 0, "jacobi": 0}
    costs = {"sequential": 0.5, "jacobi": 0.01}

    def program(name):
        def run():
            calls[name] += 1
            clock.now += costs[name]
            return ffsolve.solve(f, x0, method=name)
        return run

    found = measure([Candidate(n, program(n)) for n in costs], repeats=3, warmup=1, clock=clock,
                    min_sample_s=0.1)
    assert found["jacobi"].calls_per_repeat == 10 and found["sequential"].calls_per_repeat == 1
    # warm-up, the calibration call, then the timed calls
    assert calls == {"sequential": 1 + 1 + 3, "jacobi": 1 + 1 + 3 * 10}
    assert found["jacobi"].timing.median_s == pytest.approx(0.01)  # per call, not per sample
    # a call of 10 ms or more is timed alone: one sample per call
    assert found["jacobi"].calls_per_sample == 1 and len(found["jacobi"].timing.times_s) == 30


@pytest.mark.parametrize("warmup", [0, 1, 2])
def test_calls_per_sample_are_calibrated_after_the_warm_up_never_on_the_compile(warmup):
    clock = FakeClock()
    f, x0 = chain()
    calls = {"sequential": 0, "jacobi": 0}

    def program(name):
        def run():
            calls[name] += 1
            # the first call compiles (5 s); every later call takes 1 ms (jacobi) or 0.5 s
            clock.now += 5.0 if calls[name] == 1 else {"sequential": 0.5, "jacobi": 0.001}[name]
            return ffsolve.solve(f, x0, method=name)
        return run

    found = measure([Candidate(n, program(n)) for n in calls], repeats=2, warmup=warmup, clock=clock,
                    min_sample_s=0.1)
    jacobi = found["jacobi"]
    # calibrated on a 1 ms call (the compile would have given one call per repeat): 100 calls per
    # repeat, timed in groups of 10 (10 ms), every group one sample of the per-call time
    assert jacobi.calibration_s == pytest.approx(0.001)
    assert jacobi.calls_per_repeat == 100 and jacobi.calls_per_sample == 10
    assert len(jacobi.timing.times_s) == 2 * 10 and jacobi.timing.repeats == 2
    assert jacobi.timing.median_s == pytest.approx(0.001) and jacobi.timing.max_s == pytest.approx(0.001)
    assert found["sequential"].calls_per_repeat == 1 and found["sequential"].timing.median_s == pytest.approx(0.5)
    # the compile is never timed: with no warm-up round the calibration makes it, untimed
    assert calls["jacobi"] == max(warmup, 1) + 1 + 2 * 100


def test_the_median_is_over_every_call_not_a_median_of_group_means():
    clock = FakeClock()
    f, x0 = chain()
    costs = itertools.cycle([0.02, 0.02, 0.02, 0.5])  # every fourth call is slow

    def slow_sometimes():
        clock.now += next(costs)
        return ffsolve.solve(f, x0, method="jacobi")

    def steady():
        clock.now += 0.1
        return ffsolve.solve(f, x0, method="sequential")

    found = measure([Candidate("sequential", steady), Candidate("jacobi", slow_sometimes)], repeats=3,
                    warmup=0, clock=clock, min_sample_s=0.06)
    jacobi = found["jacobi"]
    # a 20 ms call is timed alone: each of the 3 x 3 calls is a sample, and their median is 20 ms
    # (three-call means would give medians near 0.18 s)
    assert jacobi.calls_per_sample == 1 and jacobi.calls_per_repeat == 3
    assert len(jacobi.timing.times_s) == 9
    assert sorted(jacobi.timing.times_s) == pytest.approx(sorted([0.02] * 7 + [0.5] * 2))
    assert jacobi.timing.median_s == pytest.approx(0.02)


@pytest.mark.parametrize("repeats, spread", [(1, "min-max"), (3, "min-max"), (4, "min-max"), (5, "iqr"), (7, "iqr")])
def test_below_five_repeats_the_spread_is_min_and_max_not_an_iqr(tmp_path, repeats, spread):
    clock = FakeClock()
    f, x0 = chain()
    costs = itertools.count(1)

    def program(method):
        def run():
            clock.now += 0.1 * next(costs)  # every call slower than the last: a known spread
            return ffsolve.solve(f, x0, method=method)
        return run

    found = measure([Candidate(n, program(n)) for n in ("sequential", "jacobi")], repeats=repeats,
                    warmup=0, clock=clock)
    timing = found["jacobi"].timing
    assert timing.spread == spread and timing.repeats == repeats
    assert timing.min_s == min(timing.times_s) and timing.max_s == max(timing.times_s)
    assert (timing.iqr_s is None) == (spread == "min-max")
    if spread == "iqr":
        assert 0 < timing.iqr_s < timing.max_s - timing.min_s
    context = RunContext("toy", "chain", seed=3, device="cpu:test", batch=2)
    records = write_runs(found, context, {n: tmp_path / n / "metrics.json" for n in found})
    assert records["jacobi"]["timing"]["spread"] == spread  # written, so validated
    row = runs_table(list(records.values())).splitlines()[-1]
    if spread == "min-max":
        assert f"[{timing.min_s:.4g}–{timing.max_s:.4g}]" in row and "±" not in row
    else:
        assert f"± {timing.iqr_s:.2g}" in row
    gather_summary([tmp_path / "jacobi" / "metrics.json"], tmp_path / "summary.csv")
    (summary,) = read_summary(tmp_path / "summary.csv")
    assert summary["wall_time_spread"] == spread
    assert (summary["wall_time_iqr_s"] == "") == (spread == "min-max")


def test_exact_runs_are_bitwise_and_others_are_not():
    f, x0 = chain()
    exact = solver_candidate("jacobi", f, x0)
    truncated = Candidate(parse_run_name("jacobi_k2"),
                          lambda: ffsolve.solve(f, x0, method="jacobi", max_iters=2))
    found = measure([solver_candidate("sequential", f, x0), exact, truncated], repeats=1, warmup=0)
    assert found["jacobi"].bitwise_equal and found["jacobi"].max_abs_diff == 0
    assert not found["jacobi_k2"].bitwise_equal and found["jacobi_k2"].max_abs_diff > 0
    assert not found["jacobi_k2"].result.converged
    assert found["jacobi"].within_tolerance is None  # no tolerance declared: bitwise or nothing


def test_every_record_says_what_stopped_its_run(tmp_path):
    f, x0 = chain()
    weights = np.tril(np.random.default_rng(0).normal(size=(12, 12)), -1)
    weights[:, 3:] = 0  # every position reads only positions 0-2: a fixed point after 4 steps
    short = (lambda x: np.tanh(weights @ x / 12 + 0.5)), np.zeros((12, 2))
    runs = [
        solver_candidate("sequential", f, x0),
        solver_candidate("jacobi", f, x0),  # a dense chain: exact only after T = 12 steps
        Candidate("jacobi_k3", lambda: ffsolve.solve(f, x0, method="jacobi", max_iters=3)),
        Candidate("jacobi_t1e-02", lambda: ffsolve.solve(f, x0, method="jacobi", tol=1e-2)),
        Candidate("gs_jacobi_b6", lambda: ffsolve.solve(*short, method="jacobi")),
        Candidate("jacobi_top5", lambda: ffsolve.solve(f, x0, method="jacobi", max_iters=5),
                  extra={"stopped_by": "early stop"}),
    ]
    found = measure(runs, repeats=1, warmup=0)
    records = write_runs(found, RunContext("toy", "chain", seed=3, device="cpu:test", batch=2),
                         {n: tmp_path / n / "metrics.json" for n in found})
    stops = {name: r["stopped_by"] for name, r in records.items()}
    assert records["jacobi"]["iterations"] == 12 and records["gs_jacobi_b6"]["iterations"] < 12
    assert stops == {"sequential": "sequential", "jacobi": "exact_prefix", "jacobi_k3": "budget",
                     "jacobi_t1e-02": "tolerance", "gs_jacobi_b6": "fixed_point",
                     "jacobi_top5": "early_stop"}  # an experiment's own word, in one spelling
    assert not records["jacobi_k3"]["converged"] and records["jacobi"]["converged"]


def test_a_truncated_run_is_never_within_its_tolerance():
    f, x0 = chain()
    loose = Tolerance(atol=10.0, rtol=0.0, why="a test: far looser than any difference here")
    found = measure([solver_candidate("sequential", f, x0),
                     Candidate("jacobi", lambda: ffsolve.solve(f, x0, method="jacobi"), tolerance=loose),
                     Candidate("jacobi_k2", lambda: ffsolve.solve(f, x0, method="jacobi", max_iters=2),
                               tolerance=loose)], repeats=1, warmup=0)
    assert found["jacobi"].within_tolerance is True
    assert loose.holds(*[[found[n].result.x] for n in ("jacobi_k2", "sequential")])
    assert found["jacobi_k2"].within_tolerance is False  # inside the bound, but cut short


def test_a_declared_tolerance_is_judged_by_its_rule():
    f, x0 = chain()
    perturbed = lambda: ffsolve.SolveResult(  # noqa: E731
        x=ffsolve.solve(f, x0, method="sequential").x * (1 + 1e-7), iterations=3, converged=True,
        method="scan", block_size=None, tol=0.0, sequence_length=12)
    tight = Tolerance(atol=0.0, rtol=1e-9, why="a test of the rule, far tighter than the change")
    loose = Tolerance(atol=0.0, rtol=1e-6, why="a test of the rule, looser than the change")
    found = measure([solver_candidate("sequential", f, x0),
                     Candidate("scan", perturbed, tolerance=loose),
                     Candidate("scan_tight", perturbed, tolerance=tight)], repeats=1, warmup=0)
    assert found["scan"].within_tolerance is True and not found["scan"].bitwise_equal
    assert found["scan_tight"].within_tolerance is False


def test_a_nondeterministic_program_stops_the_measurement():
    f, x0 = chain()
    counter = itertools.count()
    drifting = Candidate("jacobi", lambda: ffsolve.solve(lambda x: f(x) + next(counter) * 1e-3, x0))
    with pytest.raises(RuntimeError, match="not deterministic"):
        measure([solver_candidate("sequential", f, x0), drifting], repeats=2, warmup=0)


@pytest.mark.parametrize("warmup", [0, 1])
def test_a_traced_twin_that_warms_up_replaces_the_first_warm_up_call(warmup):
    """With traced_warms_up, the first warm-up round calls the traced twin instead of the program
    and the twin does not run again; without a warm-up round it runs after the timed rounds. Its
    trace is kept and its output still checked."""
    f, x0 = chain()
    calls = []

    def program():
        calls.append("program")
        return ffsolve.solve(f, x0, method="jacobi")

    def traced(iterations=None):
        calls.append("traced")
        return ffsolve.solve(f, x0, method="jacobi", max_iters=iterations), {"marker": np.ones(2)}

    warming = Candidate(parse_run_name("jacobi"), program, traced, traced_warms_up=True)
    found = measure([solver_candidate("sequential", f, x0), warming], repeats=2, warmup=warmup)
    expected = ["traced", "program", "program"] if warmup else ["program", "program", "traced"]
    assert calls == expected and found["jacobi"].trace["marker"].shape == (2,)

    lying = Candidate(parse_run_name("jacobi"), program, lambda: traced(3), traced_warms_up=True)
    with pytest.raises(RuntimeError, match="traced run differs"):
        measure([solver_candidate("sequential", f, x0), lying], repeats=1, warmup=warmup)


def test_a_traced_twin_that_differs_from_the_timed_program_stops_the_measurement():
    f, x0 = chain()
    lying = solver_candidate(
        "jacobi", f, x0,
        traced=lambda: (ffsolve.solve(f, x0, method="jacobi", max_iters=3), {}))
    with pytest.raises(RuntimeError, match="traced run differs"):
        measure([solver_candidate("sequential", f, x0), lying], repeats=1, warmup=0)


def test_non_finite_output_and_a_missing_reference_are_refused():
    f, x0 = chain()
    with pytest.raises(ValueError, match="reference run 'sequential'"):
        measure([solver_candidate("jacobi", f, x0)], repeats=1)
    nan = Candidate("jacobi", lambda: ffsolve.solve(lambda x: f(x) * np.nan, x0))
    with pytest.raises(FloatingPointError, match="non-finite"):
        measure([solver_candidate("sequential", f, x0), nan], repeats=1, warmup=0)


def test_records_validate_and_gather_into_the_summary(tmp_path):
    f, x0 = chain()
    found = measure([solver_candidate(n, f, x0) for n in ("sequential", "jacobi", "gs_jacobi_b4")],
                    repeats=2, warmup=0)
    context = RunContext("toy", "chain", seed=3, device="cpu:test", batch=2, threads=1)
    paths = {n: tmp_path / n / "metrics.json" for n in found}
    records = write_runs(found, context, paths, {n: tmp_path / n / "trace.npz" for n in found})
    assert records["gs_jacobi_b4"]["block_size"] == 4 and records["gs_jacobi_b4"]["method"] == "gs_jacobi"
    assert records["jacobi"]["network_evaluations"] == records["jacobi"]["iterations"]
    on_disk = json.loads(paths["jacobi"].read_text())
    validate_record(on_disk)
    assert on_disk["threads"] == 1
    assert np.load(tmp_path / "jacobi" / "trace.npz")["iterations"] == on_disk["iterations"]
    assert gather_summary(list(paths.values()), tmp_path / "summary.csv") == 3
    rows = {r["run"]: r for r in read_summary(tmp_path / "summary.csv")}
    assert rows["jacobi"]["bitwise_equal"] == "True" and rows["jacobi"]["within_tolerance"] == ""
    table = runs_table(list(records.values()))
    assert "| jacobi |" in table and "| gs_jacobi (block 4) |" in table


def valid_record(**changes):
    record = {
        "experiment": "toy", "dataset": "chain", "run": "jacobi", "method": "jacobi",
        "block_size": None, "tol": 0.0, "sequence_length": 10, "iterations": 4,
        "network_evaluations": 4.0, "converged": True, "stopped_by": "fixed_point",
        "bitwise_equal": True, "max_abs_diff": 0.0,
        "tolerance": None, "within_tolerance": None, "wall_time_s": 1.0,
        "timing": {"median_s": 1.0, "iqr_s": None, "min_s": 1.0, "max_s": 1.0, "spread": "min-max",
                   "repeats": 1, "warmup": 0, "times_s": [1.0], "session": "abc"},
        "batch": 1, "device": "cpu", "seed": 0, "threads": 1, "versions": {},
        "reference": "sequential",
    }
    record.update(changes)
    return record


@pytest.mark.parametrize("changes, message", [
    ({"iterations": 11}, "exceed the sequence length"),
    ({"bitwise_equal": True, "max_abs_diff": 1e-7}, "bitwise_equal is true"),
    ({"within_tolerance": True}, "given together"),
    ({"wall_time_s": 2.0}, "median"),
    ({"network_evaluations": -1}, "field network_evaluations"),
    ({"exact_match": True, "tol": "0"}, "field tol"),
    ({"stopped_by": "top-5 unchanged"}, "field stopped_by"),
    ({"converged": False, "stopped_by": "fixed_point"}, "converged=False but stopped_by 'fixed_point'"),
    ({"converged": False, "stopped_by": "tolerance"}, "converged=False but stopped_by 'tolerance'"),
    ({"converged": True, "stopped_by": "early_stop"}, "converged=True but stopped_by 'early_stop'"),
    ({"converged": True, "stopped_by": "budget"}, "converged=True but stopped_by 'budget'"),
    ({"timing": {"median_s": 1.0, "iqr_s": 0.0, "min_s": 1.0, "max_s": 1.0, "spread": "iqr", "repeats": 3,
                 "warmup": 0, "times_s": [1.0, 1.0, 1.0], "session": "abc"}}, "an IQR needs five repeats"),
    ({"timing": {"median_s": 1.0, "iqr_s": None, "min_s": 1.0, "max_s": 1.0, "spread": "iqr", "repeats": 5,
                 "warmup": 0, "times_s": [1.0] * 5, "session": "abc"}}, "an IQR needs five repeats"),
])
def test_records_that_break_the_contract_are_refused_naming_the_field(changes, message):
    validate_record(valid_record())
    with pytest.raises(RecordError, match=message):
        validate_record(valid_record(**changes))


def test_a_record_missing_a_field_is_refused_naming_it():
    record = valid_record()
    del record["network_evaluations"]
    with pytest.raises(RecordError, match="'network_evaluations' is a required property"):
        validate_record(record)
    record = valid_record()
    del record["stopped_by"]
    with pytest.raises(RecordError, match="'stopped_by' is a required property"):
        validate_record(record)
    record = valid_record()
    del record["threads"]  # every record states the compute threads it ran with
    with pytest.raises(RecordError, match="'threads' is a required property"):
        validate_record(record)


def test_within_tolerance_on_a_run_that_did_not_converge_is_refused_naming_the_run():
    tolerance = {"atol": 1.0, "rtol": 0.0, "rule": "|x - ref| <= 1", "why": "a test"}
    for stop in ("budget", "early_stop", "deadline"):
        cut = valid_record(run="jacobi_top5", converged=False, stopped_by=stop, bitwise_equal=False,
                           max_abs_diff=0.5, tolerance=tolerance, within_tolerance=False)
        validate_record(cut)  # cut short and said so: valid
        with pytest.raises(RecordError, match="run 'jacobi_top5' did not converge .* within_tolerance"):
            validate_record({**cut, "within_tolerance": True})
    validate_record(valid_record(bitwise_equal=False, max_abs_diff=0.5, tolerance=tolerance,
                                 within_tolerance=True))  # converged: may be within tolerance


def test_speedups_only_divide_times_of_one_session():
    seq = {"wall_time_s": "2.0", "timing_session": "a"}
    assert speedup(seq, {"wall_time_s": "0.5", "timing_session": "a"}) == pytest.approx(4.0)
    assert speedup(seq, {"wall_time_s": "0.5", "timing_session": "b"}) is None
    assert speedup({"wall_time_s": "2.0", "timing_session": ""}, {"wall_time_s": "1", "timing_session": ""}) is None


def summary_row(run, method, time, session="s", block="", bitwise="True", within="", quantity="",
                experiment="pixelcnnpp", converged="True"):
    return {"experiment": experiment, "dataset": "mnist", "run": run, "method": method,
            "quantity": quantity, "block_size": block, "budget": "", "iterations": "10",
            "sequence_length": "784", "network_evaluations": "10", "wall_time_s": str(time),
            "timing_session": session, "bitwise_equal": bitwise, "within_tolerance": within,
            "converged": converged, "device": "cpu:test"}


def test_the_side_by_side_table_keeps_both_exactness_columns_and_both_baselines():
    ours = [summary_row("sequential", "sequential", 8.0),
            summary_row("sequential_cache", "sequential_cache", 4.0, bitwise="False", within="True"),
            summary_row("gs_jacobi_b112", "gs_jacobi", 1.0, block="112"),
            summary_row("gs_jacobi_cache_b112", "gs_jacobi_cache", 0.5, block="112")]
    paper = [{"experiment": "pixelcnnpp", "dataset": "mnist", "method": "sequential", "time_s": 12.0, "how": "m"},
             {"experiment": "pixelcnnpp", "dataset": "mnist", "method": "gs_jacobi", "ours": "gs_jacobi_cache",
              "time_s": 2.0, "how": "estimated"},
             {"experiment": "made", "dataset": "cifar10", "method": "jacobi", "time_s": 0.1, "how": "m"}]
    rows = {r["run"] or r["method"]: r for r in side_by_side(ours, paper)}
    gs = rows["gs_jacobi_b112"]
    assert gs["x_sequential"] == pytest.approx(8.0) and gs["x_cache"] == pytest.approx(4.0)
    # the paper's cached GS-Jacobi sits beside our cached run, not beside the uncached one
    assert "paper_time_s" not in gs
    cached = rows["gs_jacobi_cache_b112"]
    assert cached["paper_x_sequential"] == pytest.approx(6.0) and cached["paper_method"] == "gs_jacobi"
    assert rows["sequential_cache"]["bitwise"] == "no" and rows["sequential_cache"]["within_tolerance"] == "yes"
    text = speedups_markdown(list(rows.values()))
    assert "| pixelcnnpp | mnist | solve | gs_jacobi (block 112) | 10 / 784 | 10 | 1 | 8.00 | 4.00 | yes |  |" in text
    assert "| made | cifar10 | solve | jacobi (paper only) |" in text


def test_runs_are_compared_within_one_quantity_and_top5_against_the_forward_pass():
    ours = [summary_row("sequential", "sequential", 2.0, experiment="densenet"),
            summary_row("jacobi", "jacobi", 4.0, experiment="densenet", bitwise="False", within="True"),
            summary_row("jacobi_top5", "jacobi", 1.0, experiment="densenet", bitwise="False",
                        quantity="time_to_top5"),
            summary_row("sequential", "sequential", 30.0, experiment="rnn_backprop", quantity="train_200_steps"),
            summary_row("jacobi_k10", "jacobi", 10.0, experiment="rnn_backprop", quantity="train_200_steps",
                        bitwise="False"),
            summary_row("jacobi", "jacobi", 40.0, experiment="rnn_backprop", quantity="train_200_steps"),
            summary_row("sequential", "sequential", 3.0, experiment="rnn_backprop")]
    paper = [{"experiment": "rnn_backprop", "dataset": "mnist", "method": "sequential",
              "quantity": "train_200_steps", "time_s": 3.0, "how": "read off"},
             {"experiment": "rnn_backprop", "dataset": "mnist", "method": "jacobi",
              "quantity": "train_200_steps", "time_s": 1.5, "how": "read off", "ours_runs": ["jacobi_k10"]}]
    rows = {(r["experiment"], r["run"]): r for r in side_by_side(ours, paper)}
    assert rows[("densenet", "jacobi_top5")]["x_sequential"] == pytest.approx(2.0)
    train = rows[("rnn_backprop", "jacobi_k10")]
    assert train["x_sequential"] == pytest.approx(3.0) and train["paper_x_sequential"] == pytest.approx(2.0)
    # the paper's truncated budgets sit beside ours, not beside exact Jacobi
    assert "paper_time_s" not in rows[("rnn_backprop", "jacobi")]

    headlines = [{"experiment": "densenet", "dataset": "imagenet", "quantity": "time_to_top5",
                  "paper": "2.13×", "how": "estimated"}]
    heads = {(h["experiment"], h["quantity"]): h for h in headline_rows(ours, headlines)}
    # the plain solve: only exact or within-tolerance runs count
    assert heads[("densenet", "solve")]["x_strongest"] == pytest.approx(0.5)
    assert heads[("densenet", "solve")]["exactness"] == "within tol."
    top5 = heads[("densenet", "time_to_top5")]
    assert top5["exactness"] == "inexact" and top5["paper"] == "2.13× [imagenet]"
    # a run cut short is inexact even where a (stale) record says within tolerance, and a top-5
    # run is shown by its top-5 agreement
    cut = {**summary_row("jacobi_top5", "jacobi", 1.0, experiment="densenet", bitwise="False", within="True",
                         quantity="time_to_top5", converged="False"), "top5_match_fraction": "0.75"}
    (head,) = [h for h in headline_rows([ours[0], cut], []) if h["quantity"] == "time_to_top5"]
    assert head["exactness"] == "inexact (top-5 = reference for 75 % of images)"
    (row,) = [r for r in side_by_side([ours[0], cut], []) if r["run"] == "jacobi_top5"]
    assert row["within_tolerance"] == "inexact; top-5 = reference for 75 % of images"
    assert "| inexact; top-5 = reference for 75 % of images |" in speedups_markdown([row])
    assert "within tol." not in runs_table([cut]).splitlines()[-1]
    ran_out = {**cut, "converged": "True", "within_tolerance": ""}  # reached the fixed point
    (head,) = [h for h in headline_rows([ours[0], ran_out], []) if h["quantity"] == "time_to_top5"]
    assert head["exactness"] == "top-5 = reference for 75 % of images"
    assert heads[("rnn_backprop", "solve")]["run"] == "no parallel run"
    assert heads[("rnn_backprop", "train_200_steps")]["paper"] == "none"


def test_the_headline_takes_the_stronger_baseline_and_prefers_bitwise_runs():
    ours = [summary_row("sequential", "sequential", 8.0),
            summary_row("sequential_cache", "sequential_cache", 2.0),
            summary_row("jacobi", "jacobi", 0.5),
            summary_row("jacobi_t1e-02", "jacobi", 0.1, bitwise="False"),
            {**summary_row("jacobi_t1e-06", "jacobi", 0.2), "tol": "1e-06"},
            summary_row("gs_jacobi_cache_b112", "gs_jacobi_cache", 0.4, block="112", bitwise="False",
                        within="True"),
            summary_row("auto", "auto", 0.05)]
    (head,) = headline_rows(ours, [])
    assert head["run"] == "jacobi" and head["strongest"] == "sequential_cache"
    assert head["x_strongest"] == pytest.approx(4.0) and head["exactness"] == "bitwise"
    assert "| pixelcnnpp | mnist | solve | jacobi | 4.00 (vs sequential_cache) | 16.00 | 10 / 784 | bitwise |" in (
        headline_markdown([head]))


def test_paper_numbers_file_names_how_each_number_was_obtained(tmp_path):
    paper = load_paper(ROOT / "workflow/resources/paper_numbers.yaml")
    assert all(row["how"] for row in paper.runs)
    cached = {row["method"]: row.get("ours") for row in paper.runs
              if row["experiment"] == "pixelcnnpp" and row["dataset"] == "mnist"}
    assert cached["jacobi_gs"] == "jacobi_gs_cache" and cached["gs_jacobi"] == "gs_jacobi_cache"
    bad = tmp_path / "paper.yaml"
    bad.write_text("runs: [{experiment: made, dataset: mnist, method: jacobi, time_s: 1}]\nheadlines: []\n")
    with pytest.raises(ValueError, match="lacks \\['how'\\]"):
        load_paper(bad)


def test_run_names_round_trip_and_expand_per_config():
    assert run_name("gs_jacobi", 16) == "gs_jacobi_b16" and run_name("jacobi", budget=10) == "jacobi_k10"
    assert parse_run_name("gs_jacobi_cache_b112").method == "gs_jacobi_cache"
    assert parse_run_name("jacobi_k10").budget == 10
    names = [r.name for r in expand_runs(["sequential", "jacobi", "gs_jacobi"], [4, 8], [10],
                                         blocked=["gs_jacobi"], budgeted=["jacobi"])]
    assert names == ["sequential", "jacobi_k10", "jacobi", "gs_jacobi_b4", "gs_jacobi_b8"]
    per_method = expand_runs(["jacobi_gs", "gs_jacobi"], {"jacobi_gs": [28], "gs_jacobi": [112, 56]},
                             blocked=["jacobi_gs", "gs_jacobi"])
    assert [r.name for r in per_method] == ["jacobi_gs_b28", "gs_jacobi_b112", "gs_jacobi_b56"]
    with pytest.raises(ValueError, match=r"block sizes given for \['jacobi'\]"):
        expand_runs(["jacobi"], {"jacobi": [2]}, blocked=["gs_jacobi"])
    with pytest.raises(ValueError, match="unknown method 'jacobbi'"):
        parse_run_name("jacobbi", methods=["jacobi"])
    with pytest.raises(ValueError, match="needs block sizes"):
        expand_runs(["gs_jacobi"], [], blocked=["gs_jacobi"])


def test_run_names_carry_a_canonical_round_tripping_tolerance():
    assert run_name("jacobi", tol=1e-4) == "jacobi_t1e-04"
    assert run_name("gs_jacobi", 28, tol=1e-2) == "gs_jacobi_b28_t1e-02"
    assert run_name("jacobi", tol=0.0) == "jacobi" and RunSpec("jacobi", tol=0.0) == RunSpec("jacobi")
    assert format_tol(2.5e-3) == "2.5e-03" and format_tol(1e-100) == "1e-100"
    for tol in (1e-6, 1e-4, 1e-2, 2.5e-3, 1 / 3, 7e-12, 0.5):
        for spec in (RunSpec("jacobi", tol=tol), RunSpec("gs_jacobi", 16, tol=tol),
                     RunSpec("jacobi", budget=3, tol=tol)):
            assert parse_run_name(spec.name) == spec and parse_run_name(spec.name).tol == tol
    assert parse_run_name("jacobi_k10").tol is None
    assert RunSpec("jacobi", tol=1e-4).stopping_tol(0.5) == 1e-4 and RunSpec("jacobi").stopping_tol(0.5) == 0.5
    with pytest.raises(ValueError, match="canonical form; write it 'jacobi_t1e-04'"):
        parse_run_name("jacobi_t1e-004")
    with pytest.raises(ValueError, match="not a run name"):
        parse_run_name("jacobi_t0e+00")
    for bad in (-1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive finite"):
            RunSpec("jacobi", tol=bad)
    with pytest.raises(ValueError, match="cannot be part of a run name"):
        run_name("jacobi_t1e-04", tol=1e-2)


def test_expand_runs_adds_each_parallel_method_at_each_tolerance_never_the_baselines():
    names = [r.name for r in expand_runs(
        ["sequential", "sequential_cache", "jacobi", "gs_jacobi", "auto"], [4, 8], [10],
        blocked=["gs_jacobi"], budgeted=["jacobi"], tols=[0.0, 1e-4, 1e-2])]
    assert names == [
        "sequential", "sequential_cache", "jacobi_k10", "jacobi", "gs_jacobi_b4", "gs_jacobi_b8", "auto",
        "jacobi_t1e-04", "jacobi_t1e-02", "gs_jacobi_b4_t1e-04", "gs_jacobi_b4_t1e-02",
        "gs_jacobi_b8_t1e-04", "gs_jacobi_b8_t1e-02",
    ]
    only = [r.name for r in expand_runs(["sequential", "jacobi", "gs_jacobi", "auto"], [4],
                                        blocked=["gs_jacobi"], tols={"jacobi": [1e-6], "auto": [1e-2]})]
    assert only == ["sequential", "jacobi", "gs_jacobi_b4", "auto", "jacobi_t1e-06", "auto_t1e-02"]
    by_run = expand_runs(["jacobi", "gs_jacobi"], [4, 8], blocked=["gs_jacobi"],
                         tols={"jacobi": [1e-2], "gs_jacobi_b8": [1e-2]})
    assert [r.name for r in by_run] == ["jacobi", "gs_jacobi_b4", "gs_jacobi_b8", "jacobi_t1e-02",
                                        "gs_jacobi_b8_t1e-02"]
    with pytest.raises(ValueError, match=r"sequential baselines \['sequential'\]"):
        expand_runs(["sequential", "jacobi"], tols={"sequential": [1e-3]})
    # a config cannot drop the default mapping's keys, so a method it does not run is skipped ...
    assert [r.name for r in expand_runs(["jacobi"], tols={"gs_jacobi": [1e-3]})] == ["jacobi"]
    # ... but a run of a configured method that the config does not make is refused
    with pytest.raises(ValueError, match=r"tolerances given for \['gs_jacobi_b16'\]"):
        expand_runs(["gs_jacobi"], [4], blocked=["gs_jacobi"], tols={"gs_jacobi_b16": [1e-3]})
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        expand_runs(["jacobi"], tols=[-1.0])
    with pytest.raises(ValueError, match="repeat a name"):
        expand_runs(["jacobi"], tols=[1e-4, 1e-4])
    assert exact_run_names(["sequential", "jacobi", "jacobi_t1e-04", "gs_jacobi_b4_t1e-02", "auto"]) == [
        "sequential", "jacobi", "auto"]


def test_seed_streams_are_fixed_and_independent_by_name():
    assert seed_stream(1234, "made", "mnist", "noise") == seed_stream(1234, "made", "mnist", "noise")
    values = {seed_stream(s, "made", d, u) for s in (0, 1) for d in ("mnist", "cifar10")
              for u in ("init", "noise")}
    assert len(values) == 8
    # The value is pinned: a change of scheme would silently change every result.
    assert seed_stream(1234, "made", "mnist", "noise") == 3734011207
    with pytest.raises(ValueError, match="non-empty names"):
        seed_stream(1, "")


def test_typed_settings_name_the_bad_key():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Train:
        steps: int
        lr: float = 1e-3

    @dataclass(frozen=True)
    class Settings:
        train: Train
        block_sizes: tuple[int, ...]

    made = settings_from(Settings, {"train": {"steps": 3}, "block_sizes": [1, 2]}, "made")
    assert made == Settings(Train(3, 1e-3), (1, 2))
    with pytest.raises(SettingsError, match=r"'made.train.steps' must be an integer"):
        settings_from(Settings, {"train": {"steps": "3"}, "block_sizes": []}, "made")
    with pytest.raises(SettingsError, match=r"'made.train' has unknown settings \['stpes'\]"):
        settings_from(Settings, {"train": {"stpes": 3}, "block_sizes": []}, "made")
    with pytest.raises(SettingsError, match=r"'made.block_sizes' is missing"):
        settings_from(Settings, {"train": {"steps": 3}}, "made")
    assert TimingSettings(**{"repeats": 2, "warmup": 0}).repeats == 2


def test_typed_settings_check_both_spellings_of_optional():
    from dataclasses import dataclass
    from typing import Optional

    @dataclass(frozen=True)
    class Settings:
        size: int | None
        folder: Optional[str] = None

    assert settings_from(Settings, {"size": None}, "d") == Settings(None)
    assert settings_from(Settings, {"size": 3, "folder": "x"}, "d") == Settings(3, "x")
    with pytest.raises(SettingsError, match=r"'d.size' must be an integer"):
        settings_from(Settings, {"size": "3"}, "d")
    with pytest.raises(SettingsError, match=r"'d.folder' must be a string"):
        settings_from(Settings, {"size": 3, "folder": 4}, "d")


def test_writes_are_atomic_and_refuse_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "m.json", {"x": float("nan")})
    assert not (tmp_path / "m.json").exists()
    write_npz(tmp_path / "t.npz", {"a": [1, 2]})
    assert list(np.load(tmp_path / "t.npz")["a"]) == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]  # no torn or temporary file


def test_the_auto_table_compares_with_the_best_bitwise_run_of_the_same_session():
    from ffsolve.kit.tables import auto_markdown, auto_rows

    def row(run, method, seconds, bitwise="True", converged="True", session="s1", **extra):
        return {"experiment": "made", "dataset": "mnist", "run": run, "method": method,
                "wall_time_s": str(seconds), "bitwise_equal": bitwise, "converged": converged,
                "timing_session": session, **extra}

    rows = [row("sequential", "sequential", 1.0), row("jacobi", "jacobi", 0.1),
            row("cache", "sequential_cache", 0.05, bitwise="False"),  # within tolerance only
            row("jacobi_k2", "jacobi", 0.01, converged="False"),  # truncated
            row("other", "jacobi", 0.001, session="s2"),  # another process
            row("auto", "auto", 0.11, auto_chosen="jacobi", auto_first_call_s="0.3")]
    [entry] = auto_rows(rows)
    assert entry["best"] == "jacobi" and entry["chosen"] == "jacobi"
    assert entry["steady_ratio"] == pytest.approx(1.1) and entry["first_ratio"] == pytest.approx(3.0)
    assert "| made | mnist | jacobi | jacobi (0.1) | 0.11 (1.10×) | 0.3 (3.00×) |" in auto_markdown([entry])


def test_speedups_figure_has_one_panel_per_experiment_and_names_tolerances():
    from ffsolve.kit import speedups_figure

    def row(experiment, run, label, x, method="jacobi"):
        return {"experiment": experiment, "dataset": "mnist", "method": method, "run": run,
                "label": label, "x_sequential": x}

    fig = speedups_figure([row("made", "jacobi_t1e-04", "jacobi", 2.0), row("made", "jacobi", "jacobi", 3.0),
                           row("densenet", "jacobi", "jacobi", 0.5),
                           row("densenet", "sequential", "sequential", 1.0, method="sequential")])
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["densenet", "made"]
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["mnist · jacobi, tol 0.0001",
                                                                      "mnist · jacobi"]
