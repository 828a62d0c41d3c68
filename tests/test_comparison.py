"""The side-by-side table: our ratios from our times, the paper's from its own, never mixed."""

import pytest

from ffsolve.comparison import load_paper, side_by_side, to_markdown


def run(method, time, block="", experiment="pixelcnnpp", dataset="mnist"):
    name = f"{method}_b{block}" if block else method
    return {"experiment": experiment, "dataset": dataset, "method": method, "block_size": block,
            "run": name,
            "iterations": "10", "sequence_length": "784", "wall_time_s": str(time),
            "exact_match": "True", "device": "cpu:test x2"}


def test_speedups_against_both_baselines_and_paper_beside():
    ours = [run("sequential", 8.0), run("sequential_cache", 4.0), run("gs_jacobi", 1.0, "2")]
    paper = [
        {"experiment": "pixelcnnpp", "dataset": "mnist", "method": "sequential", "time_s": 12.0},
        {"experiment": "pixelcnnpp", "dataset": "mnist", "method": "sequential_cache", "time_s": 6.0},
        {"experiment": "pixelcnnpp", "dataset": "mnist", "method": "gs_jacobi", "time_s": 2.0},
        {"experiment": "made", "dataset": "cifar10", "method": "jacobi", "time_s": 0.1},
    ]
    rows = {(r["experiment"], r["method"]): r for r in side_by_side(ours, paper)}
    gs = rows[("pixelcnnpp", "gs_jacobi")]
    assert gs["x_sequential"] == pytest.approx(8.0) and gs["x_cache"] == pytest.approx(4.0)
    assert gs["paper_x_sequential"] == pytest.approx(6.0) and gs["paper_x_cache"] == pytest.approx(3.0)
    assert rows[("made", "jacobi")].get("time_s") is None  # paper-only rows stay, ours blank
    table = to_markdown(list(rows.values()))
    assert "| pixelcnnpp | mnist | gs_jacobi_b2 | 2 | 10 / 784 | 1 | 8.00 | 4.00 | True |" in table


def test_runs_of_one_method_stay_apart():
    ours = [run("sequential", 1.0, experiment="rnn_backprop"),
            {**run("jacobi", 2.0, experiment="rnn_backprop"), "run": "jacobi_k10"},
            {**run("jacobi", 4.0, experiment="rnn_backprop"), "run": "jacobi_k80"}]
    rows = side_by_side(ours, [])
    assert [r["run"] for r in rows] == ["sequential", "jacobi_k10", "jacobi_k80"]


def test_shipped_paper_numbers_load(repo_root):
    rows = load_paper(repo_root / "workflow" / "resources" / "paper_numbers.yaml")
    made = {r["method"]: r for r in rows if r["experiment"] == "made" and r["dataset"] == "mnist"}
    assert made["jacobi"]["iterations"] == 31 and made["sequential"]["time_s"] == 0.3428
