"""The results page: every measured number of a workflow run on one generated page, stamped with
where it came from.

The workflow's ``results_page`` rule writes ``results/results.md`` from ``results/summary.csv``
(every run's record), ``workflow/resources/paper_numbers.yaml`` (the original's numbers) and a
stamp (:func:`make_stamp`: the commit, date, machine and config of the run), which it keeps
beside it as ``results/stamp.json``. A copy from a clean run of the embedded default is committed
as ``docs/results.md`` together with the two inputs it was made from (``docs/results/``), and a
test regenerates the page from them: the page cannot be edited by hand.

    python -m ffsolve.workflow.results_page --publish docs      # after a clean run: copy page and inputs
    python -m ffsolve.workflow.results_page --check docs        # the committed page is the generator's

A GPU run's record set (``scripts/gpu_benchmark.sh``'s ``gpu_benchmark.json``) is published
beside them with ``--gpu``, and the page gives it its own section with the card named.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Optional, Sequence

from ffsolve.workflow.gpu_records import markdown
from ffsolve.kit.io import write_text
from ffsolve.kit.record import read_summary
from ffsolve.kit.tables import (auto_markdown, auto_rows, auto_text, baselines_by_group,
                                baselines_for, converged, exactness_level, exactness_text,
                                field_of, headline_markdown, headline_rows, label, load_paper,
                                number_text, quantity, ratio_text, speedup, strongest_baseline, time_text)

STAMP_KEYS = ("commit", "date", "machine", "devices", "config_files", "config_sha256", "command")
PUBLISHED = ("results.md", "results/summary.csv", "results/stamp.json")
"""The committed copy under a folder (``docs``): the page, and the inputs it was made from."""
GPU_RECORDS = "results/gpu_benchmark.json"
"""Beside them, when a GPU run was published: ``scripts/gpu_benchmark.sh``'s record set."""


# -- the stamp

def _git(root: Path, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             check=True, timeout=30)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip()


def commit_of(root: str | os.PathLike = ".") -> str:
    """``<short hash> (clean checkout)``, ``… (with uncommitted changes: a, b)`` or ``unknown (not
    a git checkout)``; results/, resources/ and the figures are ignored files and do not count."""
    root = Path(root)
    head = _git(root, "rev-parse", "--short=12", "HEAD")
    if head is None:
        return "unknown (not a git checkout)"
    changed = _git(root, "status", "--porcelain", "--untracked-files=no") or ""
    files = [line[3:] for line in changed.splitlines() if line.strip()]
    if not files:
        return f"{head} (clean checkout)"
    shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    return f"{head} (with uncommitted changes: {shown})"


def machine() -> str:
    """The host: CPU model, cores, memory and OS (the devices the runs used are in the records)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle
                          if line.startswith("model name")), model)
    except OSError:
        pass
    memory = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages * size / 2 ** 30:.0f} GiB"
    except (AttributeError, ValueError, OSError):
        pass
    return f"{model}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}"


def command_for(config_files: Sequence[str]) -> str:
    """The workflow command that reads ``config_files`` (the Snakefile reads the first,
    config/config.yaml, by itself)."""
    extra = [path for path in config_files if Path(path).as_posix() != "config/config.yaml"]
    return " ".join(["snakemake --cores all"] + [f"--configfile {path}" for path in extra]
                    + (["--"] if extra else []) + ["figures"])


def make_stamp(rows: Sequence[Mapping], config: Mapping, config_files: Sequence[str],
               root: str | os.PathLike = ".") -> dict:
    """Where a run's records came from: commit, date (UTC), machine, the devices the records
    name, the config files, a hash of the merged config (``--config`` overrides included), and
    the command that reads those files."""
    canonical = json.dumps(config, sort_keys=True, default=str).encode()
    return {
        "commit": commit_of(root),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "devices": sorted({str(r.get("device", "")) for r in rows if r.get("device")}),
        "config_files": [str(path) for path in config_files],
        "config_sha256": hashlib.sha256(canonical).hexdigest()[:16],
        "command": command_for(config_files),
    }


def read_stamp(path: str | os.PathLike) -> dict:
    with open(path) as handle:
        stamp = json.load(handle)
    missing = [key for key in STAMP_KEYS if key not in stamp]
    if missing:
        raise ValueError(f"{path}: the stamp lacks {missing}")
    return stamp


# -- the page

LEGEND = (
    "**Words.** *Bitwise*: the timed program's output equals the sequential one bit for bit. "
    "*Within tol.*: only for paths that cannot be bitwise (other shapes or summation order), under "
    "the rule written beside it. *Inexact*: stopped early (a tolerance, a step budget, a top-5 "
    "rule): never counted as within tolerance. *Iterations* are parallel steps out of T; *network "
    "evals* count the work in full-network passes. Times are medians of interleaved repeats in one "
    "process per experiment and dataset, with their spread (`± IQR` from five repeats, `[min–max]` "
    "below); every ratio divides two times from that process. An `auto` row gives its steady state "
    "(the chosen run alone) and its first call (the pilot included) beside it.")


def _stamp_table(stamp: Mapping, records: str, count: int) -> str:
    config = ", ".join(f"`{path}`" for path in stamp["config_files"]) or "the defaults"
    rows = [
        ("records", f"`{records}` ({count} runs)"),
        ("commit", stamp["commit"]),
        ("date", stamp["date"]),
        ("machine", stamp["machine"]),
        ("devices", ", ".join(f"`{d}`" for d in stamp["devices"]) or "—"),
        ("config", f"{config} (merged config's sha256 {stamp['config_sha256']})"),
        ("command", f"`{stamp['command']}`"),
    ]
    return "| stamp | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def _exactness_cell(row: Mapping) -> str:
    if field_of(row, "guarantee") == "distribution-exact":
        return "distribution-exact (a fresh sample; not the sequential one)"
    if not converged(row):
        stop = str(field_of(row, "stopped_by")).replace("_", " ")
        return "inexact" + (f" (stopped by {stop})" if stop else "")
    if float(field_of(row, "tol", 0) or 0) > 0:
        return f"inexact (stopped at tol {float(row['tol']):g})"
    exactness = exactness_level(row)
    text = exactness_text(row, exactness)
    rule = field_of(row, "tolerance_rule")
    return f"{text}: {rule}" if exactness == 1 and rule else text


def _guarantees_markdown() -> str:
    """What each sampler of :func:`ffsolve.sample_autoregressive` promises (not a measurement)."""
    from ffsolve.speculative import GUARANTEE_MEANING, GUARANTEES

    lines = ["The samplers with fresh noise (`ffsolve.sample_autoregressive`, docs/speculative.md) "
             "promise one of two things; *iterations* are the steps of the slowest row (the model "
             "calls), the steps per sample are in `results/speculative/steps.md`.", "",
             "| method | guarantee | what it means |", "|---|---|---|"]
    for method, guarantee in GUARANTEES.items():
        lines.append(f"| `{method}` | {guarantee} | {GUARANTEE_MEANING[guarantee]} |")
    return "\n".join(lines) + "\n"


def _runs_markdown(rows: Sequence[Mapping], groups) -> str:
    lines = ["| run | quantity | iterations / T | network evals | time (s) | × strongest baseline "
             "| × naive loop | exactness |", "|---|---|---|---|---|---|---|---|"]
    order = {"sequential": 0, "sequential_cache": 1, "auto": 3}
    for r in sorted(rows, key=lambda r: (quantity(r) != "solve", quantity(r),
                                         order.get(r["method"], 2), r["run"])):
        group = baselines_for(groups, r)
        strongest = strongest_baseline(group, r)
        ratio = speedup(strongest, r) if strongest and strongest is not r else None
        versus = f"{ratio_text(ratio)} (vs {strongest['method']})" if ratio is not None else ""
        lines.append(
            f"| {label(r)} | {quantity(r)} | {r['iterations']} / {r['sequence_length']} | "
            f"{number_text(r['network_evaluations'], '.4g')} | {time_text(r)}{auto_text(r)} | {versus} | "
            f"{ratio_text(speedup(group.get('sequential'), r))} | {_exactness_cell(r)} |")
    return "\n".join(lines) + "\n"


def _paper_markdown(runs: Sequence[Mapping]) -> str:
    base: dict[tuple, float] = {}
    for r in runs:
        if r["method"] == "sequential":
            base[(r["dataset"], quantity(r))] = float(r["time_s"])
    lines = ["| their run | dataset | quantity | iterations | time (s) | × their loop | how they "
             "got it |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        loop = base.get((r["dataset"], quantity(r))) or base.get((r["dataset"], "solve"))
        ratio = number_text(loop / float(r["time_s"]), ".2f") if loop else ""
        lines.append(f"| {r['method']} | {r['dataset']} | {quantity(r)} | "
                     f"{field_of(r, 'iterations')} | {number_text(r['time_s'], '.4g')} | {ratio} | {r['how']} |")
    return "\n".join(lines) + "\n"


def _gpu_markdown(gpu: Mapping, name: str) -> str:
    """The GPU record set's section: the card, when and how each part ran, its tables."""
    lines = [f"## On a GPU: {gpu['device']}", "",
             f"From `{name}`: `scripts/gpu_benchmark.sh` (one call of `benchmarks/gpu_benchmark.py`), "
             f"started {gpu['started']}. Its sizes are the paper's, not the CPU default's above, so "
             "its rows are compared only with each other. The parts ran as:", ""]
    for part, entry in gpu["parts"].items():
        command = " ".join(str(word) for word in entry.get("command", []))
        lines.append(f"- {part}: `{command}`" if command else f"- {part}: {entry.get('status')}")
    body = markdown(gpu, level=2).split("\n", 1)[1]  # its own title is this section's
    return "\n".join(lines) + "\n" + body


def page(rows: Sequence[Mapping], paper_yaml: str | os.PathLike, stamp: Mapping,
         records: str = "results/summary.csv", gpu: Optional[Mapping] = None,
         gpu_name: str = GPU_RECORDS) -> str:
    """The results page (Markdown) of summary rows ``rows``, named ``records`` on the page; with a
    GPU record set (``gpu``, ``gpu_benchmark.json``'s content), its section at the end."""
    paper = load_paper(paper_yaml)
    groups = baselines_by_group(rows)
    by_experiment: dict[str, list[Mapping]] = defaultdict(list)
    for r in rows:
        by_experiment[r["experiment"]].append(r)
    parts = [
        "# Results",
        "",
        "Every number this project measured, from one run of the workflow. Generated by "
        "`ffsolve.workflow.results_page` from the records and stamp below; do not edit it by hand "
        "(`tests/workflow/test_results_page.py` regenerates the committed copy from the inputs it names).",
        "",
        _stamp_table(stamp, records, len(rows)),
        LEGEND,
        "",
        headline_markdown(headline_rows(rows, paper.headlines)),
        "## `auto`: the chosen run against the best exact run",
        "",
        "Steady state and first call as multiples of the fastest run that converged bitwise at "
        "tol 0 (the runs an exact `auto` may answer with), timed in the same process.",
        "",
        auto_markdown(auto_rows(rows)),
    ]
    for experiment in sorted(by_experiment):
        runs = by_experiment[experiment]
        parts += [f"## {experiment}", ""]
        if any(field_of(r, "guarantee") for r in runs):
            parts += [_guarantees_markdown()]
        for dataset in sorted({r["dataset"] for r in runs}):
            ours = [r for r in runs if r["dataset"] == dataset]
            parts += [f"### {experiment} · {dataset}", "", _runs_markdown(ours, groups)]
        theirs = [r for r in paper.runs if r["experiment"] == experiment]
        if theirs:
            parts += [f"The original's runs ({experiment}; Song et al. 2021, hardware not stated; "
                      "`workflow/resources/paper_numbers.yaml`):", "", _paper_markdown(theirs)]
    if gpu is not None:
        parts += [_gpu_markdown(gpu, gpu_name)]
    else:
        parts += ["## On a GPU", "", "No GPU record set is published with this page: "
                  "`scripts/gpu_benchmark.sh` makes one (`docs/measuring.md`), "
                  "`python -m ffsolve.workflow.results_page --publish docs --gpu <its gpu_benchmark.json>` "
                  "adds it here."]
    return "\n".join(parts).rstrip() + "\n"


def write_page(summary_csv: str, paper_yaml: str, stamp_json: str, out: str,
               records: Optional[str] = None) -> str:
    text = page(read_summary(summary_csv), paper_yaml, read_stamp(stamp_json),
                records=records or str(summary_csv))
    write_text(out, text)
    return text


def write_stamp(summary_csv: str, config: Mapping, config_files: Sequence[str], out: str,
                root: str | os.PathLike = ".") -> dict:
    stamp = make_stamp(read_summary(summary_csv), config, config_files, root)
    write_text(out, json.dumps(stamp, indent=1) + "\n")
    return stamp


# -- the committed copy

def published_inputs(folder: str | os.PathLike) -> tuple[Path, Path, Path]:
    folder = Path(folder)
    return tuple(folder / name for name in PUBLISHED)  # type: ignore[return-value]


def read_gpu(path: str | os.PathLike) -> dict:
    """A GPU record set; a smoke run's (tiny sizes on a CPU) is refused: not results."""
    with open(path) as handle:
        gpu = json.load(handle)
    missing = [key for key in ("device", "started", "smoke", "parts") if key not in gpu]
    if missing:
        raise ValueError(f"{path}: not a gpu_benchmark.json (it lacks {missing})")
    if gpu["smoke"]:
        raise ValueError(f"{path}: a smoke run (tiny sizes, CPU) is a test of the script, not "
                         "results: publish a full run's gpu_benchmark.json")
    return gpu


def regenerate(folder: str | os.PathLike, paper_yaml: str | os.PathLike) -> str:
    """The page the generator makes from the inputs committed under ``folder``."""
    page_path, summary, stamp = published_inputs(folder)
    name = Path(folder).name
    gpu_path = Path(folder) / GPU_RECORDS
    gpu = read_gpu(gpu_path) if gpu_path.exists() else None
    return page(read_summary(summary), paper_yaml, read_stamp(stamp),
                records=f"{name}/{PUBLISHED[1]}", gpu=gpu, gpu_name=f"{name}/{GPU_RECORDS}")


def publish(results: str | os.PathLike, folder: str | os.PathLike, paper_yaml: str,
            gpu: Optional[str | os.PathLike] = None) -> Path:
    """Copy a run's summary and stamp (and a GPU record set) under ``folder``, write its page."""
    results = Path(results)
    page_path, summary, stamp = published_inputs(folder)
    summary.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(results / "summary.csv", summary)
    shutil.copyfile(results / "stamp.json", stamp)
    if gpu is not None:
        read_gpu(gpu)
        shutil.copyfile(gpu, Path(folder) / GPU_RECORDS)
    write_text(page_path, regenerate(folder, paper_yaml))
    return page_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results", help="a run's results/ folder")
    parser.add_argument("--paper", default="workflow/resources/paper_numbers.yaml")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--publish", metavar="FOLDER", help="copy the run's page and inputs here")
    action.add_argument("--check", metavar="FOLDER", help="is FOLDER's page the generator's?")
    parser.add_argument("--gpu", help="with --publish: a full run's gpu_benchmark.json to add")
    args = parser.parse_args(argv)
    if args.publish:
        for need in ("summary.csv", "stamp.json"):
            if not (Path(args.results) / need).exists():
                parser.error(f"{args.results}/{need} is missing: run the workflow's results_page "
                             "rule first (.venv/bin/snakemake --cores all figures)")
        print(publish(args.results, args.publish, args.paper, args.gpu))
        return 0
    page_path = published_inputs(args.check)[0]
    if page_path.read_text() != regenerate(args.check, args.paper):
        print(f"{page_path} is not what the generator makes from its inputs: run "
              f"python -m ffsolve.workflow.results_page --publish {args.check} after a clean run",
              file=sys.stderr)
        return 1
    print(f"{page_path}: up to date with its inputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
