"""The speed/error frontier (figures/frontier.png): what stopping early buys, per experiment.

With ``tol > 0`` a parallel method stops once no position changes by more than ``tol`` in one
step, so it takes fewer parallel steps and less time, and its answer is no longer the sequential
one. The frontier puts, for every experiment and dataset with frontier runs (run names
``<method>[_b<block>]_t<tol>``, :mod:`ffsolve.kit.runs`), each such run's **largest absolute
difference from the sequential result** (``max_abs_diff`` of its record) against its **parallel
steps** and against its **wall time** (median of the interleaved repeats, the same timing
session as the sequential run's). One line per method (and block size), through its exact run
(tol 0, difference 0, drawn at the axis floor) and its runs at each tolerance; the sequential
run is the reference line (T steps; its time). Everything is read from ``results/summary.csv``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ffsolve.kit.runs import RunSpec, parse_run_name

DIFF_FLOOR = 1e-12  # an exact (bitwise) answer is drawn here on the log axis


@dataclass(frozen=True)
class Point:
    run: str
    tol: float
    max_abs_diff: float
    iterations: int
    wall_time_s: float
    bitwise_equal: bool


@dataclass
class Panel:
    """One experiment and dataset: its lines (method and block -> points, by tolerance) and the
    sequential reference."""

    experiment: str
    dataset: str
    lines: dict[str, list[Point]]
    sequence_length: int
    sequential_s: float | None


def _number(row: Mapping, key: str) -> float:
    value = row.get(key, "")
    if value in ("", None):
        raise ValueError(f"summary row {row.get('experiment')}/{row.get('dataset')}/{row.get('run')}: "
                         f"column {key!r} is empty")
    return float(value)


def _true(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def frontier_panels(rows: Iterable[Mapping]) -> list[Panel]:
    """The panels of the figure from the summary's rows: every experiment and dataset with at
    least one run at a tolerance > 0. Rows of another quantity than one solve, budget runs and
    ``auto`` runs are left out (they are not points of a method's tolerance sweep)."""
    groups: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for row in rows:
        if row.get("quantity") not in (None, "", "solve"):
            continue
        groups[(row["experiment"], row["dataset"])].append(row)
    panels = []
    for (experiment, dataset), members in sorted(groups.items()):
        specs = {}
        for row in members:
            try:
                specs[row["run"]] = parse_run_name(row["run"])
            except ValueError:
                continue
        swept = {RunSpec(s.method, s.block_size).name for s in specs.values()
                 if s.tol is not None and s.budget is None and s.method != "auto"}
        if not swept:
            continue
        lines: dict[str, list[Point]] = defaultdict(list)
        sequential_s, length = None, 0
        for row in members:
            spec = specs.get(row["run"])
            if spec is None:
                continue
            length = max(length, int(_number(row, "sequence_length")))
            if row["run"] == (row.get("reference") or "sequential"):
                sequential_s = _number(row, "wall_time_s")
            line = RunSpec(spec.method, spec.block_size).name
            if line not in swept or spec.budget is not None:
                continue
            lines[line].append(Point(row["run"], spec.tol or 0.0, _number(row, "max_abs_diff"),
                                     int(_number(row, "iterations")), _number(row, "wall_time_s"),
                                     _true(row.get("bitwise_equal"))))
        for points in lines.values():
            points.sort(key=lambda p: p.tol)
        panels.append(Panel(experiment, dataset, dict(sorted(lines.items())), length, sequential_s))
    return panels


def plotted_diff(point: Point) -> float:
    """Where a point sits on the figure's log axis (bitwise ones at :data:`DIFF_FLOOR`)."""
    return max(point.max_abs_diff, DIFF_FLOOR)


def frontier_markdown(panels: Sequence[Panel]) -> str:
    """The figure's numbers as a table (for the log and the report)."""
    lines = ["| experiment | dataset | run | tol | max abs diff | bitwise | steps | wall time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for panel in panels:
        for points in panel.lines.values():
            for p in points:
                lines.append(f"| {panel.experiment} | {panel.dataset} | {p.run} | {p.tol:g} | "
                             f"{p.max_abs_diff:.3g} | {'yes' if p.bitwise_equal else 'no'} | "
                             f"{p.iterations} / {panel.sequence_length} | {p.wall_time_s:.4g} |")
    return "\n".join(lines) + "\n"
