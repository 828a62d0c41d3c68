"""The GPU benchmark's record set as Markdown: one table per part, ratios within a group.

``benchmarks/gpu_benchmark.py`` writes ``gpu_benchmark.json`` (every part's status and records)
and renders it with :func:`markdown`; the results page (:mod:`ffsolve.workflow.results_page`) renders a
published copy with the same function, the card named. This module imports nothing of ffsolve's
(the benchmark's parent process loads it by path and stays light).
"""

from __future__ import annotations

NAME_KEYS = ("run", "method")
TIME_KEYS = ("wall_time_s", "median_s", "backward_median_s", "step_median_s")
GROUP_KEYS = ("dataset", "framework", "T", "H", "hidden")
BASELINES = ("sequential", "sequential_cache")


def rows_of(obj) -> list[dict]:
    """Every dict (at any depth) with a run/method name and a time: the records of a part."""
    found = []
    if isinstance(obj, dict):
        if any(k in obj for k in NAME_KEYS) and any(isinstance(obj.get(k), (int, float)) for k in TIME_KEYS):
            return [obj]
        for value in obj.values():
            found += rows_of(value)
    elif isinstance(obj, list):
        for value in obj:
            found += rows_of(value)
    return found


def _num(v) -> str:
    return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def part_table(records: dict) -> list[str]:
    rows = rows_of(records)
    if not rows:
        return []
    name = lambda r: str(r.get("run", r.get("method")))  # noqa: E731
    group = lambda r: " ".join(f"{k}={r[k]}" for k in GROUP_KEYS if k in r)  # noqa: E731
    lines = ["| group | run | iterations | time | seconds | × sequential | × sequential_cache | exact |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = {name(b): b for b in rows if group(b) == group(r) and name(b) in BASELINES}
        for key in [k for k in TIME_KEYS if isinstance(r.get(k), (int, float))]:
            ratios = []
            for b in BASELINES:
                t = base.get(b, {}).get(key)
                ratios.append(f"{t / r[key]:.2f}×" if isinstance(t, (int, float)) and r[key] > 0 else "")
            exact = ("bitwise" if r.get("bitwise_equal") else "within tol." if r.get("within_tolerance")
                     else "no" if "bitwise_equal" in r else "")
            lines.append(f"| {group(r)} | {name(r)} | {_num(r.get('iterations'))} | {key} | {_num(r[key])} | "
                         f"{ratios[0]} | {ratios[1]} | {exact} |")
    return lines


def markdown(result: dict, level: int = 1) -> str:
    """The record set as Markdown; ``level``: the depth of its title (its parts one deeper)."""
    head = "#" * level
    lines = [f"{head} GPU benchmark ({'smoke, ' if result['smoke'] else ''}{result['device']})", "",
             f"{result['started']}, total {result['seconds']:.0f} s; python {result['python']}, "
             f"torch {result.get('torch', '?')}, jax {result.get('jax', '?')}. "
             "Ratios: the baseline's time / the run's, within a group.",
             "", "| part | status | exit | seconds | cap (s) |", "|---|---|---|---|---|"]
    for name, p in result["parts"].items():
        lines.append(f"| {name} | {p['status']}{': ' + p['reason'] if p.get('reason') else ''} | "
                     f"{_num(p.get('exit_status'))} | {_num(p.get('seconds'))} | {_num(p.get('cap_s'))} |")
    for name, p in result["parts"].items():
        train = p.get("records", {}).get("train.json")
        table = part_table(p.get("records", {}))
        if not (table or train or p["status"] not in ("ok", "skipped")):
            continue
        lines += ["", f"{head}# {name} ({p['status']})", ""]
        if train:
            lines += [f"Trained {train.get('steps_done')} steps in {_num(train.get('wall_time_s'))} s "
                      f"(stopped by {train.get('stopped_by')}): test {_num(train.get('final_test_bpd'))} "
                      "bits/dim.", ""]
        lines += table
        if p["status"] not in ("ok", "skipped"):
            lines += ["", "```", *p.get("log_tail", []), "```"]
    return "\n".join(lines) + "\n"
