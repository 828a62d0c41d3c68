"""The speed/error frontier figure: which runs make a line, and the files it writes."""

import csv

import pytest

from ffsolve.kit.frontier import DIFF_FLOOR, frontier_markdown, frontier_panels
from ffsolve.kit.record import SUMMARY_COLUMNS
from ffsolve.workflow.figures import write_frontier


def row(run, iterations, diff, seconds, experiment="made", dataset="mnist", **more):
    values = {key: "" for key in SUMMARY_COLUMNS}
    values.update(experiment=experiment, dataset=dataset, run=run, sequence_length=784,
                  iterations=iterations, max_abs_diff=diff, wall_time_s=seconds,
                  bitwise_equal=diff == 0, reference="sequential", **more)
    return values


ROWS = [
    row("sequential", 784, 0.0, 2.0),
    row("jacobi", 40, 0.0, 0.1),
    row("jacobi_t1e-04", 20, 3e-5, 0.05),
    row("jacobi_t1e-02", 10, 4e-3, 0.03),
    row("gs_jacobi_b28", 90, 0.0, 0.3),
    row("gs_jacobi_b28_t1e-02", 50, 1e-3, 0.2),
    row("gs_jacobi_b112", 80, 0.0, 0.3),          # no tolerance runs: no line
    row("jacobi_k5", 5, 1.0, 0.01),               # a budget: not a point of the sweep
    row("auto", 40, 0.0, 0.12),                   # auto: not a method's sweep
    row("sequential", 100, 0.0, 1.0, experiment="densenet"),   # no frontier runs at all
    row("jacobi", 100, 0.0, 5.0, experiment="densenet"),
]


def test_panels_hold_one_line_per_swept_method_through_its_exact_run():
    panels = frontier_panels(ROWS)
    assert [(p.experiment, p.dataset) for p in panels] == [("made", "mnist")]
    panel = panels[0]
    assert list(panel.lines) == ["gs_jacobi_b28", "jacobi"]
    assert [(p.run, p.tol, p.iterations) for p in panel.lines["jacobi"]] == [
        ("jacobi", 0.0, 40), ("jacobi_t1e-04", 1e-4, 20), ("jacobi_t1e-02", 1e-2, 10)]
    assert panel.sequential_s == 2.0 and panel.sequence_length == 784
    assert panel.lines["jacobi"][0].bitwise_equal and not panel.lines["jacobi"][1].bitwise_equal
    table = frontier_markdown(panels)
    assert "| made | mnist | jacobi_t1e-02 | 0.01 | 0.004 | no | 10 / 784 | 0.03 |" in table


def test_other_quantities_are_left_out_and_empty_columns_fail_loudly():
    rows = [dict(r, quantity="train_200_steps") for r in ROWS[:4]]
    assert frontier_panels(rows) == []
    bad = [dict(ROWS[2], max_abs_diff="")] + ROWS[:2]
    with pytest.raises(ValueError, match=r"made/mnist/jacobi_t1e-04: column 'max_abs_diff' is empty"):
        frontier_panels(bad)


def test_write_frontier_draws_png_and_pdf(tmp_path):
    summary = tmp_path / "summary.csv"
    with open(summary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(ROWS)
    png, pdf = tmp_path / "f.png", tmp_path / "f.pdf"
    panels = write_frontier(str(summary), str(png), str(pdf))
    assert len(panels) == 1 and png.stat().st_size > 10_000 and pdf.stat().st_size > 1_000
    empty = tmp_path / "empty.csv"
    with open(empty, "w", newline="") as handle:
        csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS).writeheader()
    assert write_frontier(str(empty), str(tmp_path / "e.png")) == [] and (tmp_path / "e.png").exists()
    assert DIFF_FLOOR > 0
