"""The results page is generated, stamped, and the committed copy is what the generator makes."""

import csv
import json
import shutil

import pytest

from ffsolve.workflow import results_page
from ffsolve.kit.record import SUMMARY_COLUMNS

PAPER = "workflow/resources/paper_numbers.yaml"


def _row(run, method, seconds, **extra):
    row = {column: "" for column in SUMMARY_COLUMNS}
    row.update(experiment="solver_demo", dataset="tanh_map", run=run, method=method,
               quantity="solve", tol="0.0", sequence_length="64", iterations="64",
               network_evaluations="1", converged="True", stopped_by="fixed_point",
               bitwise_equal="True", wall_time_s=str(seconds), wall_time_spread="min-max",
               wall_time_min_s=str(seconds), wall_time_max_s=str(seconds), timing_repeats="3",
               reference="sequential", timing_session="s1", device="cpu:test x2",
               metrics_path=f"results/solver_demo/tanh_map/{run}/metrics.json")
    row.update({k: str(v) for k, v in extra.items()})
    return row


STAMP = {"commit": "0123456789ab (clean checkout)", "date": "2026-12-07 10:00 UTC",
         "machine": "a test CPU, 2 cores", "devices": ["cpu:test x2"],
         "config_files": ["config/config.yaml"], "config_sha256": "feedfacecafebeef",
         "command": "snakemake --cores all figures"}


def test_the_page_names_each_runs_tolerance_and_its_stamp(repo_root):
    rows = [_row("sequential", "sequential", 0.5),
            _row("jacobi", "jacobi", 0.1, iterations=20, network_evaluations=20),
            _row("jacobi_t1e-04", "jacobi", 0.05, tol=1e-4, iterations=9, network_evaluations=9,
                 stopped_by="tolerance", bitwise_equal="False"),
            _row("gs_jacobi_b8", "gs_jacobi", 0.2, block_size=8, bitwise_equal="False",
                 within_tolerance="True", tolerance_rule="|x - ref| <= 1e-6")]
    text = results_page.page(rows, repo_root / PAPER, STAMP)
    for value in STAMP.values():
        assert (value[0] if isinstance(value, list) else value) in text
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()
             if line.startswith("| ") and "tanh_map" not in line}
    assert "5.00 (vs sequential)" in lines["jacobi"] and "| bitwise |" in lines["jacobi"]
    # A run stopped at a tolerance says so in its name and is never "within tolerance".
    assert "inexact (stopped at tol 0.0001)" in lines["jacobi (tol 1e-4)"]
    assert "within tol.: |x - ref| <= 1e-6" in lines["gs_jacobi (block 8)"]
    # The headline takes the exact run, not the faster one stopped at a tolerance.
    headline = next(line for line in text.splitlines() if line.startswith("| solver_demo | tanh_map"))
    assert "| jacobi |" in headline and "5.00" in headline


def test_the_samplers_with_fresh_noise_carry_their_guarantee(repo_root):
    def sampler(method, guarantee, bitwise):
        return _row(method, method, 0.1, experiment="speculative", dataset="gru",
                    quantity="sample_32", guarantee=guarantee, bitwise_equal=bitwise)

    rows = [sampler("sequential", "sample-exact", "True"), sampler("jacobi", "sample-exact", "True"),
            sampler("sjd", "distribution-exact", "False"),
            sampler("coupled", "distribution-exact", "False")]
    text = results_page.page(rows, repo_root / PAPER, STAMP)
    section = text.split("## speculative", 1)[1]
    assert "| `coupled` | distribution-exact |" in section and "| `jacobi` | sample-exact |" in section
    sjd = next(line for line in section.splitlines() if line.startswith("| sjd |"))
    assert "distribution-exact (a fresh sample; not the sequential one)" in sjd
    jacobi = next(line for line in section.splitlines() if line.startswith("| jacobi |"))
    assert "| bitwise |" in jacobi


def test_the_stamp_says_where_the_records_came_from(tmp_path, repo_root):
    stamp = results_page.make_stamp([_row("sequential", "sequential", 0.5)], {"seed": 1},
                                    ["config/config.yaml", "config/paper.yaml"], root=repo_root)
    assert set(stamp) == set(results_page.STAMP_KEYS)
    assert stamp["devices"] == ["cpu:test x2"]
    assert stamp["command"] == "snakemake --cores all --configfile config/paper.yaml -- figures"
    assert "not a git checkout" in results_page.commit_of(tmp_path)
    other = results_page.make_stamp([], {"seed": 2}, ["config/config.yaml"], root=repo_root)
    assert other["config_sha256"] != stamp["config_sha256"]
    (tmp_path / "stamp.json").write_text(json.dumps({"commit": "x"}))
    with pytest.raises(ValueError, match="lacks"):
        results_page.read_stamp(tmp_path / "stamp.json")


def test_the_committed_page_is_the_generators_from_the_records_it_names(repo_root):
    page, summary, stamp = results_page.published_inputs(repo_root / "docs")
    assert page.read_text() == results_page.regenerate(repo_root / "docs", repo_root / PAPER), (
        "docs/results.md is not what ffsolve.workflow.results_page makes from docs/results/: regenerate "
        "it with python -m ffsolve.workflow.results_page --publish docs after a clean run of the default")
    recorded = json.loads(stamp.read_text())
    assert recorded["commit"].endswith("(clean checkout)"), "publish a clean checkout's run"
    assert recorded["command"] == "snakemake --cores all figures", "publish the embedded default"
    with open(summary, newline="") as handle:
        rows = list(csv.DictReader(handle))
    experiments = {row["experiment"] for row in rows}
    assert {"made", "densenet", "pixelcnnpp", "rnn_backprop", "rnn_forward", "solver_demo"} <= experiments
    for row in rows:  # every record is on the page
        assert f"## {row['experiment']}" in page.read_text()


def test_a_hand_edit_of_the_committed_page_is_caught(tmp_path, repo_root, capsys):
    copy = tmp_path / "docs"
    shutil.copytree(repo_root / "docs", copy)
    assert results_page.main(["--check", str(copy), "--paper", str(repo_root / PAPER)]) == 0
    page = copy / "results.md"
    text = page.read_text()
    edited = text.replace("| bitwise |", "| within tol. |", 1)
    assert edited != text
    page.write_text(edited)
    assert results_page.main(["--check", str(copy), "--paper", str(repo_root / PAPER)]) == 1
    assert "--publish" in capsys.readouterr().err


def _gpu_records(smoke=False):
    run = {"experiment": "made", "dataset": "mnist", "run": "jacobi", "method": "jacobi",
           "iterations": 31, "wall_time_s": 0.002, "bitwise_equal": True}
    base = dict(run, run="sequential", method="sequential", iterations=784, wall_time_s=0.3)
    return {"device": "NVIDIA H100 80GB HBM3", "started": "2026-12-07 12:00:00 UTC", "smoke": smoke,
            "python": "3.12", "seconds": 400.0, "budget_s": 465.0, "ok": True,
            "parts": {"made": {"command": ["python", "benchmarks/made_benchmark.py", "--device", "cuda"],
                               "cap_s": 60.0, "status": "ok", "exit_status": 0, "seconds": 30.0,
                               "records": {"made.json": {"runs": [base, run]}}}}}


def test_a_gpu_record_set_gets_its_own_section_with_the_card_named(tmp_path, repo_root):
    rows = [_row("sequential", "sequential", 0.5)]
    without = results_page.page(rows, repo_root / PAPER, STAMP)
    assert "No GPU record set is published" in without
    text = results_page.page(rows, repo_root / PAPER, STAMP, gpu=_gpu_records())
    assert "## On a GPU: NVIDIA H100 80GB HBM3" in text
    assert "`python benchmarks/made_benchmark.py --device cuda`" in text
    assert "| 150.00×" in text  # the part's ratio: 0.3 s / 0.002 s, within its own group
    (tmp_path / "smoke.json").write_text(json.dumps(_gpu_records(smoke=True)))
    with pytest.raises(ValueError, match="smoke"):
        results_page.read_gpu(tmp_path / "smoke.json")
