"""Labels, speedups and tables, built once for every experiment, the notebooks and
``figures/speedups.md``.

A speedup is a ratio of two median times from one harness session (one process, repeats
interleaved); :func:`speedup` refuses any other pair. Exactness is shown in two columns that never
mix: ``bitwise`` (equal to the sequential result bit for bit) and ``within tol.`` (only for paths
that cannot be bitwise, under the rule their record states). A run that did not converge (stopped
by a budget, an early-stop rule or a deadline) is "inexact" in every table, whatever its distance;
a run stopped by a top-5 rule shows its top-5 agreement with the reference instead of a tolerance.
Times are medians with their spread: ``± IQR`` from five repeats on, ``[min–max]`` below
(:func:`time_text`). An ``auto`` run's time is its steady state (the chosen program alone), its
first call (the pilot included) and its choice beside it (:func:`auto_text`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import yaml

from ffsolve.kit.runs import is_sequential_baseline

BASELINES = ("sequential", "sequential_cache", "sequential_native")


def field_of(row: Mapping, key: str, default=""):
    value = row.get(key, default)
    return default if value is None else value


def label(record: Mapping) -> str:
    """``gs_jacobi (block 16)``, ``jacobi (≤ 10 steps)``, ``jacobi (tol 1e-4)``, ``jacobi``: a
    run stopped at a tolerance names it."""
    parts = []
    if field_of(record, "block_size") != "":
        parts.append(f"block {record['block_size']}")
    if field_of(record, "budget") != "":
        parts.append(f"≤ {record['budget']} steps")
    if float(field_of(record, "tol", 0) or 0) > 0:
        parts.append(f"tol {float(record['tol']):.0e}".replace("e-0", "e-"))
    return record["method"] + (f" ({', '.join(parts)})" if parts else "")


def _session(row: Mapping) -> str:
    timing = row.get("timing")
    if isinstance(timing, Mapping):
        return str(timing.get("session", ""))
    return str(field_of(row, "timing_session"))


def speedup(baseline: Mapping, row: Mapping) -> Optional[float]:
    """``baseline`` time / ``row`` time, only when both were timed in the same harness session."""
    if not baseline or not _session(baseline) or _session(baseline) != _session(row):
        return None
    time, base = float(row["wall_time_s"]), float(baseline["wall_time_s"])
    return base / time if time > 0 else None


def yes_no(value) -> str:
    if value in ("", None):
        return ""
    return "yes" if str(value).lower() == "true" else "no"


def number_text(value, spec: str) -> str:
    return "" if value in (None, "") else format(float(value), spec)


def ratio_text(value) -> str:
    """A speedup: two decimals, or two significant digits below 0.1 (a 0.004× stays readable)."""
    if value in (None, ""):
        return ""
    value = float(value)
    return format(value, ".2f") if value >= 0.1 else format(value, ".2g")


def converged(row: Mapping) -> bool:
    """Whether a run (record or summary row) converged; a row that does not say counts as converged."""
    return yes_no(field_of(row, "converged")) != "no"


def top5_text(row: Mapping) -> str:
    """A top-5-stopped run's accuracy measure, e.g. ``top-5 = reference for 98 % of images``."""
    fraction = field_of(row, "top5_match_fraction")
    return "" if fraction == "" else f"top-5 = reference for {100 * float(fraction):.0f} % of images"


def within_text(row: Mapping) -> str:
    """The ``within tol.`` cell: ``inexact`` for a run that did not converge, else its
    within-tolerance flag; a top-5 run's agreement beside it."""
    parts = ["inexact"] if not converged(row) else [yes_no(field_of(row, "within_tolerance"))]
    parts.append(top5_text(row))
    return "; ".join(part for part in parts if part)


def time_text(row: Mapping) -> str:
    """``0.123 ± 0.004`` (median ± IQR, five repeats or more) or ``0.123 [0.118–0.131]``
    (median [min–max], below five repeats), from a record or a summary row."""
    timing = row.get("timing") if isinstance(row.get("timing"), Mapping) else None
    if timing is not None:
        spread, iqr, low, high = (timing.get("spread", "iqr"), timing.get("iqr_s"),
                                  timing.get("min_s"), timing.get("max_s"))
    else:
        spread, iqr, low, high = (field_of(row, "wall_time_spread") or "iqr", field_of(row, "wall_time_iqr_s"),
                                  field_of(row, "wall_time_min_s"), field_of(row, "wall_time_max_s"))
    median = number_text(row.get("wall_time_s"), ".4g")
    if spread == "min-max":
        return f"{median} [{number_text(low, '.4g')}–{number_text(high, '.4g')}]"
    return f"{median} ± {number_text(iqr, '.2g')}"


def auto_fields(row: Mapping) -> tuple[str, str]:
    """``(chosen run, first call's seconds)`` of an ``auto`` run (record or summary row), else
    empty strings."""
    auto = row.get("auto")
    if isinstance(auto, Mapping):
        return str(auto.get("chosen", "")), number_text(auto.get("first_call_s"), ".4g")
    return str(field_of(row, "auto_chosen")), number_text(row.get("auto_first_call_s"), ".4g")


def auto_text(row: Mapping) -> str:
    """`` (first call 0.83 s, pilot included; chose jacobi)`` for an ``auto`` run, else ``""``:
    written beside its steady-state time."""
    chosen, first = auto_fields(row)
    if not chosen and not first:
        return ""
    parts = [f"first call {first} s, pilot included"] if first else []
    parts += [f"chose {chosen}"] if chosen else []
    return f" ({'; '.join(parts)})"


def auto_rows(rows: Iterable[Mapping]) -> list[dict]:
    """Per ``auto`` run: what it chose, and its steady-state and first-call times against the
    best eligible run of its experiment, dataset and quantity (the fastest run timed in the same
    session that converged at tol 0 and is bitwise: the runs an exact ``auto`` may answer with)."""
    rows = list(rows)
    out = []
    for row in rows:
        if row.get("method") != "auto":
            continue
        chosen, first = auto_fields(row)
        group = [r for r in rows if r is not row and r.get("method") != "auto"
                 and (r.get("experiment"), r.get("dataset"), quantity(r))
                 == (row.get("experiment"), row.get("dataset"), quantity(row))
                 and _session(r) == _session(row) and converged(r)
                 and yes_no(field_of(r, "bitwise_equal")) == "yes"
                 and not float(field_of(r, "tol", 0) or 0) > 0]  # an exact auto never takes these
        if not group:
            continue
        best = min(group, key=lambda r: float(r["wall_time_s"]))
        best_s, steady_s = float(best["wall_time_s"]), float(row["wall_time_s"])
        out.append({"experiment": row.get("experiment"), "dataset": row.get("dataset"),
                    "chosen": chosen, "best": best.get("run"), "best_s": best_s,
                    "steady_s": steady_s, "steady_ratio": steady_s / best_s,
                    "first_call_s": float(first) if first else None,
                    "first_ratio": float(first) / best_s if first else None})
    return out


def auto_markdown(rows: Sequence[Mapping]) -> str:
    """The ``auto`` table: chosen run, steady state and first call as multiples of the best."""
    lines = ["| experiment | dataset | auto chose | best eligible run (s) | auto steady state "
             "(s, × best) | auto first call (s, × best) |", "|---|---|---|---|---|---|"]
    for r in rows:
        first = "" if r["first_call_s"] is None else \
            f"{r['first_call_s']:.4g} ({r['first_ratio']:.2f}×)"
        lines.append(f"| {r['experiment']} | {r['dataset']} | {r['chosen']} | {r['best']} "
                     f"({r['best_s']:.4g}) | {r['steady_s']:.4g} ({r['steady_ratio']:.2f}×) | "
                     f"{first} |")
    return "\n".join(lines) + "\n"


def quantity(row: Mapping) -> str:
    """What a run's time measures; ``solve`` unless its record says otherwise."""
    return str(field_of(row, "quantity") or "solve")


def baselines_by_group(rows: Iterable[Mapping]) -> dict[tuple, dict[str, Mapping]]:
    """Sequential baselines keyed by ``(experiment, dataset, quantity)``."""
    groups: dict[tuple, dict[str, Mapping]] = defaultdict(dict)
    for row in rows:
        if row["method"] in BASELINES and field_of(row, "budget") == "" and field_of(row, "block_size") == "":
            groups[(row["experiment"], row["dataset"], quantity(row))][row["method"]] = row
    return groups


def baselines_for(groups: Mapping[tuple, Mapping[str, Mapping]], row: Mapping) -> Mapping[str, Mapping]:
    """The baselines a run is compared with: those timed for its own quantity, else the plain
    solve's (a time-to-top-5 run is compared with the forward pass)."""
    key = (row["experiment"], row["dataset"])
    return groups.get(key + (quantity(row),)) or groups.get(key + ("solve",)) or {}


def strongest_baseline(baselines: Mapping[str, Mapping], row: Mapping) -> Optional[Mapping]:
    """The faster of the sequential baselines timed in ``row``'s session (None if none was)."""
    timed = [b for b in baselines.values() if speedup(b, row) is not None]
    return min(timed, key=lambda b: float(b["wall_time_s"])) if timed else None


def runs_table(records: Sequence[Mapping]) -> str:
    """One experiment's runs (metrics records or summary rows): the notebooks' table."""
    base = baselines_by_group(records)
    lines = [
        "| run | iterations / T | network evals | time (s, median ± IQR; [min–max] below 5 repeats) | "
        "× sequential | × cached seq. | bitwise | within tol. | converged | stopped by |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        group = baselines_for(base, r)
        lines.append(
            f"| {label(r)} | {r['iterations']} / {r['sequence_length']} | "
            f"{number_text(r['network_evaluations'], '.4g')} | {time_text(r)}{auto_text(r)} | "
            f"{ratio_text(speedup(group.get('sequential'), r))} | "
            f"{ratio_text(speedup(group.get('sequential_cache'), r))} | {yes_no(r['bitwise_equal'])} | "
            f"{within_text(r)} | {yes_no(r['converged'])} | {str(field_of(r, 'stopped_by')).replace('_', ' ')} |"
        )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PaperNumbers:
    """``workflow/resources/paper_numbers.yaml``: the authors' runs and one headline per
    experiment and quantity."""

    runs: list[dict]
    headlines: list[dict]


def load_paper(path: str | Path) -> PaperNumbers:
    with open(path) as handle:
        content = yaml.safe_load(handle)
    if not isinstance(content, Mapping) or set(content) != {"runs", "headlines"}:
        raise ValueError(f"{path}: expected exactly the keys 'runs' and 'headlines'")
    for section, required in (("runs", {"experiment", "dataset", "method", "time_s", "how"}),
                              ("headlines", {"experiment", "dataset", "quantity", "paper", "how"})):
        for row in content[section]:
            missing = required - set(row)
            if missing:
                raise ValueError(f"{path}: {section} entry {row} lacks {sorted(missing)}")
    return PaperNumbers(list(content["runs"]), list(content["headlines"]))


def _ours(paper_row: Mapping) -> str:
    return str(paper_row.get("ours") or paper_row["method"])


def side_by_side(ours: Iterable[Mapping], paper: Iterable[Mapping]) -> list[dict]:
    """One row per run of ours and per paper entry. A paper entry sits beside every run of ours
    with the same experiment, dataset and quantity whose method is the entry's ``ours`` (the same
    algorithm with the same caching), or only beside the runs its ``ours_runs`` lists (the
    paper's truncated Jacobi budgets beside ours, not beside exact Jacobi). Our ratios come from our times (same session), the paper's
    from its own; they are never mixed."""
    ours, paper = list(ours), list(paper)
    our_base = baselines_by_group(ours)
    paper_base: dict[tuple, dict[str, float]] = defaultdict(dict)
    for row in paper:
        if row["method"] in BASELINES:
            paper_base[(row["experiment"], row["dataset"], quantity(row))][row["method"]] = float(row["time_s"])

    merged: dict[tuple, dict] = {}
    for row in ours:
        group = baselines_for(our_base, row)
        merged[(row["experiment"], row["dataset"], quantity(row), row["method"], row["run"])] = {
            "experiment": row["experiment"], "dataset": row["dataset"], "method": row["method"],
            "quantity": quantity(row), "run": row["run"], "label": label(row),
            "iterations": row["iterations"], "sequence_length": row["sequence_length"],
            "network_evaluations": row["network_evaluations"],
            "time_s": float(row["wall_time_s"]),
            "auto": auto_text(row),
            "x_sequential": speedup(group.get("sequential"), row),
            "x_cache": speedup(group.get("sequential_cache"), row),
            "bitwise": yes_no(row["bitwise_equal"]),
            "within_tolerance": within_text(row),
            "device": row["device"],
        }
    for row in paper:
        key = (row["experiment"], row["dataset"], quantity(row), _ours(row))
        base = (paper_base.get(key[:3]) or paper_base.get(key[:2] + ("solve",)) or {})
        time = float(row["time_s"])
        cols = {
            "paper_method": row["method"],
            "paper_iterations": field_of(row, "iterations"), "paper_time_s": time,
            "paper_x_sequential": base["sequential"] / time if "sequential" in base else None,
            "paper_x_cache": base["sequential_cache"] / time if "sequential_cache" in base else None,
            "paper_note": field_of(row, "how"),
        }
        only = set(row.get("ours_runs") or ())
        matches = [k for k in merged if k[:4] == key and (not only or k[4] in only)]
        if not matches:
            merged[key + ("",)] = {"experiment": key[0], "dataset": key[1], "method": key[3],
                                   "quantity": key[2], "run": "",
                                   "label": f"{row['method']} (paper only)"}
            matches = [key + ("",)]
        for match in matches:
            merged[match].update(cols)
    order = {"sequential": 0, "sequential_cache": 1}
    return sorted(merged.values(), key=lambda r: (r["experiment"], r["dataset"], r["quantity"] != "solve",
                                                  r["quantity"], order.get(r["method"], 2), r["method"],
                                                  r["run"]))


def exactness_level(row: Mapping) -> int:
    """2 bitwise, 1 within its declared tolerance, 0 neither (and any run that did not converge)."""
    if not converged(row):
        return 0
    if yes_no(row.get("bitwise_equal")) == "yes":
        return 2
    return 1 if yes_no(field_of(row, "within_tolerance")) == "yes" else 0


def exactness_text(row: Mapping, exactness: int) -> str:
    """``bitwise``, ``within tol.`` or ``inexact``; a top-5 run by its top-5 agreement (beside
    ``inexact`` when it was cut short, alone when it ran to the end)."""
    word, top5 = ("bitwise", "within tol.", "inexact")[2 - exactness], top5_text(row)
    if not top5:
        return word
    return f"{word} ({top5})" if exactness or not converged(row) else top5


def headline_rows(ours: Iterable[Mapping], headlines: Iterable[Mapping]) -> list[dict]:
    """One row per experiment, dataset and quantity: our best run against the strongest
    sequential baseline timed beside it, and the paper's figure for the same quantity.

    "Best" prefers bitwise runs, then runs within their declared tolerance; for the plain solve,
    runs that are neither never count, nor do runs stopped at tol > 0 (even where they happened to
    land on the bitwise result) or truncated budgets. For other quantities (time to
    a top-5 match, training) an inexact run can be best, and the table says it is inexact (any
    run that did not converge is, whatever its distance), with a top-5 run's agreement. The
    baselines themselves and ``auto`` (which picks among the others) are not candidates.
    """
    ours, headlines = list(ours), list(headlines)
    base = baselines_by_group(ours)
    groups: dict[tuple, list[Mapping]] = defaultdict(list)
    for row in ours:
        groups[(row["experiment"], row["dataset"], quantity(row))].append(row)

    def paper_for(experiment: str, dataset: str, what: str) -> tuple[str, str]:
        for h in headlines:
            if (h["experiment"], h["dataset"], h["quantity"]) == (experiment, dataset, what):
                return h["paper"], h["how"]
        for h in headlines:
            if (h["experiment"], h["quantity"]) == (experiment, what):
                return f"{h['paper']} [{h['dataset']}]", h["how"]
        return "none", "the paper has no figure for this quantity"

    rows = []
    for (experiment, dataset, what), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != "solve", kv[0][2])):
        scored = []
        for r in runs:
            if is_sequential_baseline(r["method"]) or r["method"] == "auto":
                continue  # the baselines (sequential_band_cache too) and auto's pick
            if what == "solve" and (yes_no(r.get("converged")) == "no" or float(field_of(r, "tol", 0) or 0) > 0):
                # a run stopped at tol > 0 may happen to be bitwise here; it is not guaranteed to be
                continue
            exactness = exactness_level(r)
            if what == "solve" and exactness == 0:
                continue
            strongest = strongest_baseline(baselines_for(base, r), r)
            if strongest is None:
                continue
            scored.append((exactness, speedup(strongest, r), r, strongest))
        paper, how = paper_for(experiment, dataset, what)
        row = {"experiment": experiment, "dataset": dataset, "quantity": what, "paper": paper, "paper_how": how}
        if scored:
            exactness, ratio, best, strongest = max(scored, key=lambda s: (s[0], s[1]))
            row.update(run=label(best), x_strongest=ratio, strongest=strongest["method"],
                       x_sequential=speedup(baselines_for(base, best).get("sequential"), best),
                       iterations=f"{best['iterations']} / {best['sequence_length']}",
                       exactness=exactness_text(best, exactness))
        else:
            row.update(run="no parallel run", x_strongest=None, x_sequential=None, strongest="",
                       iterations="", exactness="")
        rows.append(row)
    return rows


def headline_markdown(rows: Sequence[Mapping]) -> str:
    lines = [
        "## At a glance",
        "",
        "One row per experiment, dataset and timed quantity: our best run against the *strongest* of "
        "the sequential baselines timed in the same process (the naive loop, the cached sampler, "
        "or the framework's own kernel; the ratio to the naive loop beside it, as the paper measured), preferring bitwise-exact runs; beside it, the paper's figure for the same "
        "quantity and how the paper obtained it. Square brackets: the paper's dataset, where it "
        "differs from ours.",
        "",
        "| experiment | dataset | quantity | our best run | × strongest baseline | × naive loop | iters / T | "
        "exactness | paper, same quantity | how the paper got it |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = ratio_text(r.get("x_strongest"))
        ratio = f"{ratio} (vs {r['strongest']})" if ratio else ""
        lines.append(
            f"| {r['experiment']} | {r['dataset']} | {r['quantity']} | {r['run']} | {ratio} | "
            f"{ratio_text(r.get('x_sequential'))} | {r['iterations']} | {r['exactness']} | {r['paper']} | {r['paper_how']} |"
        )
    return "\n".join(lines) + "\n"


def speedups_markdown(rows: Sequence[Mapping], headlines: Sequence[Mapping] = ()) -> str:
    lines = [
        "# Our measurements beside the original's",
        "",
    ]
    if headlines:
        lines += [headline_markdown(headlines), "## Every run", ""]
    lines += [
        "Ours: medians of timed repeats; every run of one experiment and dataset was timed in one "
        "process, repeats interleaved, on the same weights and noise, and each speedup divides two "
        "times of that process. **bitwise**: the output of the timed program equals the sequential "
        "one bit for bit. **within tol.**: only for paths that cannot be bitwise (other shapes or "
        "summation order); the rule and its reason are in the run's metrics.json; a run that did not "
        "converge (a step budget, an early-stop rule) is inexact, and a top-5-stopped run gives its "
        "top-5 agreement with the forward pass instead. Iterations are "
        "parallel steps; network evals count the work in full-network passes. **quantity**: what "
        "was timed (`solve`: one solve of the system); rows are compared only within one quantity, "
        "and a time-to-top-5 run against the forward pass. **auto**: its steady-state time (the "
        "run it chose, alone), its first call (the pilot that chose, included) beside it. "
        "Paper: the authors' reported values "
        "(Song et al. 2021; hardware not stated) beside our run of the same algorithm with the same "
        "caching; `workflow/resources/paper_numbers.yaml` says how each was obtained.",
        "",
        "| experiment | dataset | quantity | run | iters / T | network evals | time (s) | ×seq | ×cache | "
        "bitwise | within tol. | device | paper method | paper iters | paper time (s) | paper ×seq | "
        "paper ×cache | how the paper got it |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        iters = f"{r['iterations']} / {r['sequence_length']}" if r.get("iterations") not in (None, "") else ""
        lines.append(
            f"| {r['experiment']} | {r['dataset']} | {r['quantity']} | {r['label']} | {iters} | "
            f"{number_text(r.get('network_evaluations'), '.4g')} | {number_text(r.get('time_s'), '.4g')}{r.get('auto', '')} | "
            f"{ratio_text(r.get('x_sequential'))} | {ratio_text(r.get('x_cache'))} | "
            f"{r.get('bitwise', '')} | {r.get('within_tolerance', '')} | {r.get('device', '')} | "
            f"{r.get('paper_method', '')} | "
            f"{r.get('paper_iterations', '')} | {number_text(r.get('paper_time_s'), '.4g')} | "
            f"{ratio_text(r.get('paper_x_sequential'))} | {ratio_text(r.get('paper_x_cache'))} | "
            f"{r.get('paper_note', '')} |"
        )
    return "\n".join(lines) + "\n"
