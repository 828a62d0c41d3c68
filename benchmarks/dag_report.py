"""How a whole DAG run went: the per-rule time table, and two runs compared.

    # per-rule wall time, CPU time and memory of one run (from Snakemake's benchmark: files)
    .venv/bin/python benchmarks/dag_report.py rules <workdir>
    # two runs of the same config: iterations and bitwise flags must agree; speedups (each a
    # ratio of two times from one process) are compared run by run
    .venv/bin/python benchmarks/dag_report.py compare <workdir A> <workdir B> [--spread 0.15]
    # what every auto run chose, its steady state and first call against the best eligible run
    .venv/bin/python benchmarks/dag_report.py auto <workdir>

Exits non-zero when the two runs disagree on iterations or bitwise flags, or when a speedup moved
by more than ``--spread`` (relative).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

from ffsolve.kit.record import read_summary
from ffsolve.kit.tables import auto_markdown, auto_rows, baselines_by_group, baselines_for, speedup


def rule_rows(workdir: Path) -> list[dict]:
    rows = []
    for tsv in sorted((workdir / "benchmarks").rglob("*.tsv")):
        with open(tsv, newline="") as handle:
            record = next(csv.DictReader(handle, delimiter="\t"))
        job = tsv.relative_to(workdir / "benchmarks").with_suffix("")
        rows.append({"job": str(job), "wall_s": float(record["s"]),
                     "cpu_s": float(record["cpu_time"]), "max_rss_mb": float(record["max_rss"])})
    return rows


def print_rules(workdir: Path) -> None:
    rows = rule_rows(workdir)
    by_stage = defaultdict(float)
    print("| job | wall (s) | CPU (s) | peak RSS (MB) |\n|---|---|---|---|")
    for r in rows:
        by_stage[r["job"].split("/")[0]] += r["wall_s"]
        print(f"| {r['job']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['max_rss_mb']:.0f} |")
    print("\n| experiment | sum of job wall times (s) |\n|---|---|")
    for stage, total in sorted(by_stage.items()):
        print(f"| {stage} | {total:.1f} |")


def speedups(rows: list[dict]) -> dict[tuple, float]:
    base = baselines_by_group(rows)
    out = {}
    for r in rows:
        value = speedup(baselines_for(base, r).get("sequential"), r)
        if value is not None and r["method"] != "sequential":
            out[(r["experiment"], r["dataset"], r["run"])] = value
    return out


def compare(a: Path, b: Path, spread: float) -> int:
    rows_a = {(r["experiment"], r["dataset"], r["run"]): r for r in read_summary(a / "results/summary.csv")}
    rows_b = {(r["experiment"], r["dataset"], r["run"]): r for r in read_summary(b / "results/summary.csv")}
    problems = []
    if rows_a.keys() != rows_b.keys():
        problems.append(f"different runs: {sorted(rows_a.keys() ^ rows_b.keys())}")
    for key in sorted(rows_a.keys() & rows_b.keys()):
        for field in ("iterations", "network_evaluations", "bitwise_equal", "within_tolerance", "max_abs_diff"):
            if rows_a[key][field] != rows_b[key][field]:
                problems.append(f"{'/'.join(key)}: {field} {rows_a[key][field]} vs {rows_b[key][field]}")
    speed_a, speed_b = speedups(list(rows_a.values())), speedups(list(rows_b.values()))
    print("| run | speedup A | speedup B | B/A − 1 |\n|---|---|---|---|")
    worst = 0.0
    for key in sorted(speed_a.keys() & speed_b.keys()):
        change = speed_b[key] / speed_a[key] - 1
        worst = max(worst, abs(change))
        flag = "" if abs(change) <= spread else " **outside**"
        print(f"| {'/'.join(key)} | {speed_a[key]:.3g}× | {speed_b[key]:.3g}× | {change:+.1%}{flag} |")
    print(f"\nlargest relative change of a speedup: {worst:.1%} (allowed {spread:.0%})")
    for problem in problems:
        print("DIFFERENT:", problem)
    return 1 if problems or worst > spread else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rules = sub.add_parser("rules", help="per-job table of one run")
    rules.add_argument("workdir", type=Path)
    cmp = sub.add_parser("compare", help="two runs of the same config")
    cmp.add_argument("a", type=Path)
    cmp.add_argument("b", type=Path)
    cmp.add_argument("--spread", type=float, default=0.15)
    auto = sub.add_parser("auto", help="the auto runs of one run against the best eligible runs")
    auto.add_argument("workdir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "rules":
        print_rules(args.workdir)
        return 0
    if args.command == "auto":
        print(auto_markdown(auto_rows(read_summary(args.workdir / "results" / "summary.csv"))))
        return 0
    return compare(args.a, args.b, args.spread)


if __name__ == "__main__":
    sys.exit(main())
