"""RNN backprop benchmark: the paper's training time at full scale, and time per backward pass and
per training step by method and T.

``--train``: the paper's quantity, exactly as the workflow's ``rnn_backprop_measure`` job computes
it (``experiment.measure``: every run's ``steps`` SGD steps timed in one process, repeats
interleaved, trained weights checked against BPTT's), with the settings of config/paper.yaml
(10 timed repeats of 200 steps, every Jacobi budget, the scans) on MNIST from ``--source``.
Writes the records under ``--out``'s folder (``<folder>/<run>/metrics.json``) and prints the
table; about 40 s per round of ten runs on one core here.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rnn_backprop_benchmark.py --train \
        --source folder --folder ../shared/data --out results/rnn_backprop/benchmark_train/runs.json

``--solve``: the other quantity, one backward pass per run on the first training batch (records
with ``"quantity": "solve"``, the adjoints checked against BPTT's), through the same harness.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rnn_backprop_benchmark.py --solve \
        --out results/rnn_backprop/benchmark_solve/runs.json

Without either: time per backward pass and per training step, by method and T.

For each sequence length T, one vanilla RNN (the paper's initialisation, std 0.1) and one batch of
sequences: MNIST images resized to 10×10 (T = 100) and read in raster order; other lengths
concatenate or cut those sequences (T = 64 is the first 64 pixels, T = 1000 ten images, ...).
Every method runs on the same weights and data in the same process (DESIGN.md §7): its gradients
are first compared with sequential BPTT's, then a backward pass (adjoints + all gradients) and a
full training step (sequential forward + backward + SGD update) are each timed ``--repeats``
times after ``--warmup`` untimed calls. Repeats are interleaved across methods (round-robin) so a
burst of load from other processes hits every method alike.

Jacobi is timed with fixed budgets and with a relative tolerance, never unbounded (that can take
T iterations of T steps each); a scan whose ``(T, B, H, H)`` step matrices would exceed
``--max-scan-gib`` is skipped with the reason printed rather than run for hours.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rnn_backprop_benchmark.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rnn_backprop_benchmark.py --hidden 32 \
        --lengths 64 100 1000 10000 --out results/rnn_backprop/benchmark_h32.json
    .venv/bin/python benchmarks/rnn_backprop_benchmark.py --device cuda --threads 4

Prints a Markdown table and writes the numbers as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from pathlib import Path

import torch

from ffsolve.data import load_dataset
from ffsolve.experiments.rnn_backprop.experiment import (
    dataset_sequences,
    sync_torch,
    time_major,
)
from ffsolve.experiments.rnn_backprop.model import forward, init_params
from ffsolve.experiments.rnn_backprop.system import backward, scan_steps
from ffsolve.workflow.jobs import setup_logging
from ffsolve.kit import RunSpec, TimingSettings
from ffsolve.runtime import (
    device_description,
    limit_threads,
    seed_everything,
    torch_device,
)

log = logging.getLogger("rnn_backprop_benchmark")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 100, 1000, 10000])
    parser.add_argument("--hidden", type=int, default=128, help="hidden size (paper 128)")
    parser.add_argument("--batch", type=int, default=1, help="sequences per pass (paper 1)")
    parser.add_argument("--budgets", type=int, nargs="*", default=[10, 80],
                        help="Jacobi iteration budgets to time")
    parser.add_argument("--tol", type=float, default=1e-6, help="Jacobi tolerance run (<0: skip)")
    parser.add_argument("--scans", nargs="*", default=["hillis_steele", "odd_even"],
                        choices=["hillis_steele", "odd_even"])
    parser.add_argument("--max-scan-gib", type=float, default=1.5,
                        help="skip a scan whose step matrices alone exceed this many GiB")
    parser.add_argument("--source", choices=["embedded", "folder"], default="embedded")
    parser.add_argument("--folder", default="../shared/data", help="folder holding MNIST/raw")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", default="results/rnn_backprop/benchmark.json",
                        help="JSON output (under results/, which git ignores)")
    parser.add_argument("--train", action="store_true",
                        help="time the paper's quantity (training) with config/paper.yaml's settings")
    parser.add_argument("--solve", action="store_true",
                        help="one backward pass per run (quantity solve) through the harness, "
                             "with --config's settings, --repeats and --warmup")
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "config" / "paper.yaml"),
                        help="--train/--solve: the config whose rnn_backprop section to use")
    parser.add_argument("--repeats-override", type=int, default=None,
                        help="--train: timed repeats instead of the config's")
    return parser.parse_args(argv)


def config_settings(args):
    """The rnn_backprop settings of ``--config`` (validated; ``--repeats-override`` applied)."""
    from snakemake.utils import validate

    from ffsolve.experiments.rnn_backprop import experiment as rnn
    from ffsolve.kit import settings_from
    from ffsolve.workflow.config import dataset_settings, merged_config

    repo = Path(__file__).resolve().parents[1]
    # merged over config/config.yaml, as the workflow does (it sets every key; the schema has no defaults)
    section = merged_config(Path(args.config).resolve(), repo)["rnn_backprop"]
    validate(section, schema=str(repo / "src" / "ffsolve" / "experiments" / "rnn_backprop" / "config.schema.yaml"))
    values = dataset_settings(section, "mnist")
    if args.repeats_override:
        values["repeats"] = args.repeats_override
    return settings_from(rnn.MeasureSettings, values, "rnn_backprop"), values


def train_benchmark(args, dataset, device) -> None:
    """The workflow's timed training job on ``dataset``, with the config's rnn_backprop settings."""
    from ffsolve.data import save_prepared
    from ffsolve.experiments.rnn_backprop import experiment as rnn
    from ffsolve.kit.tables import runs_table

    settings, values = config_settings(args)
    folder = Path(args.out).parent
    folder.mkdir(parents=True, exist_ok=True)
    prepared = folder / "mnist.npz"
    save_prepared(dataset, prepared)
    names = [run.name for run in rnn.runs(settings)]
    records = rnn.measure(
        settings, data=str(prepared), dataset="mnist", seed=args.seed, device=device.type,
        timing=TimingSettings(),
        metrics={n: str(folder / n / "metrics.json") for n in names},
        traces={n: str(folder / n / "trace.npz") for n in names},
        weights=str(folder / "trained_weights.npz"), threads=args.threads)
    print(runs_table(list(records.values())))
    base = records["sequential"]
    print("| run | time to BPTT's final EMA loss (s) | × BPTT | final EMA loss | gap |")
    print("|---|---|---|---|---|")
    for name, r in records.items():
        reach = r["time_to_target_s"]
        ratio = f"{base['time_to_target_s'] / reach:.2f}" if reach else "–"
        print(f"| {name} | {'never' if reach is None else f'{reach:.3g}'} | {ratio} | "
              f"{r['final_ema_loss']:.5g} | {r['final_ema_loss_gap']:+.3g} |")
    Path(args.out).write_text(json.dumps({"device": device_description(device), "threads": args.threads,
                                          "settings": values, "records": records}, indent=2))
    log.info("wrote %s and the records under %s", args.out, folder)


def solve_benchmark(args, dataset, device) -> None:
    """One backward pass per run (quantity ``solve``) through the harness, on the initial weights
    and the first training batch of ``--config``'s settings: the adjoints checked against BPTT's,
    ``--repeats`` interleaved rounds after ``--warmup``, fast passes repeated to 0.5 s a sample."""
    from ffsolve.experiments.rnn_backprop import experiment as rnn
    from ffsolve.kit import RunContext, measure, write_runs
    from ffsolve.kit.tables import runs_table

    settings, _ = config_settings(args)
    sequences = rnn.dataset_sequences(dataset, "train", settings.image_size).to(
        device=device, dtype=rnn.DTYPES[settings.dtype])
    params = rnn.initial_params(settings, args.seed, "mnist", 0, device=device)
    order = rnn.training_order(settings, sequences.shape[0], args.seed, "mnist", device=device)
    candidates = rnn.solve_candidates(settings, params, time_major(sequences[order[0]]))
    measurements = measure(candidates, repeats=args.repeats, warmup=args.warmup, min_sample_s=0.5)
    folder = Path(args.out).parent
    names = [c.name for c in candidates]
    records = write_runs(
        measurements, RunContext("rnn_backprop", "mnist", args.seed, device_description(device),
                                 settings.batch, args.threads),
        {n: folder / n / "metrics.json" for n in names}, {n: folder / n / "trace.npz" for n in names})
    print(runs_table(list(records.values())))
    log.info("wrote the records under %s", folder)


def make_sequences(rows: torch.Tensor, length: int, batch: int) -> torch.Tensor:
    """``(length, batch, 1)``: consecutive images' pixels, concatenated and cut to ``length``."""
    per_item = math.ceil(length / rows.shape[1])
    needed = per_item * batch
    if needed > rows.shape[0]:
        raise SystemExit(f"T = {length} × batch {batch} needs {needed} images; only {rows.shape[0]}")
    flat = rows[:needed].reshape(batch, -1)[:, :length]
    return time_major(flat)


def specs_for(length: int, args) -> tuple[dict[str, RunSpec], dict[str, str]]:
    """The methods to time at ``length``, and those skipped with the reason."""
    specs = {"sequential": RunSpec("sequential")}
    skipped = {}
    for k in args.budgets:
        specs[f"jacobi_k{k}"] = RunSpec("jacobi", budget=k)
    if args.tol >= 0:
        specs["jacobi_tol"] = RunSpec("jacobi_tol")
    item = 4 if args.dtype == "float32" else 8
    matrices_gib = length * args.batch * args.hidden ** 2 * item / 2 ** 30
    for algorithm in args.scans:
        name = f"scan_{algorithm}"
        # Hillis–Steele keeps about three arrays of step matrices alive; odd-even about two.
        factor = 3 if algorithm == "hillis_steele" else 2
        if matrices_gib * factor > args.max_scan_gib:
            skipped[name] = (f"step matrices need ~{matrices_gib * factor:.1f} GiB "
                             f"> --max-scan-gib {args.max_scan_gib}")
        else:
            specs[name] = RunSpec(name)
    return specs, skipped


def benchmark_length(length: int, rows: torch.Tensor, args, device, dtype) -> list[dict]:
    generator = torch.Generator().manual_seed(args.seed)
    params = init_params(args.hidden, 0.1, generator, dtype=dtype, device=device)
    x = make_sequences(rows, length, args.batch).to(device=device, dtype=dtype)
    cache = forward(params, x)
    specs, skipped = specs_for(length, args)
    reference = backward(params, cache, specs["sequential"]).grads.flat()
    results = {}
    for name, spec in specs.items():
        result = backward(params, cache, spec, relative_tol=args.tol)
        diff = float((result.grads.flat() - reference).abs().max())
        results[name] = {"iterations": result.solve.iterations, "converged": result.solve.converged,
                         "max_abs_diff_vs_sequential": diff,
                         "rel_diff_vs_sequential": diff / float(reference.abs().max()),
                         "backward_s": [], "step_s": []}
        log.info("T=%d %s: %d parallel steps, max |grad diff| vs sequential %.3g", length, name,
                 result.solve.iterations, diff)

    def one_step(spec):
        # A full SGD step on a copy, so that every method and repeat starts from the same weights.
        local = params.clone()
        step_cache = forward(local, x)
        local.sgd_step_(backward(local, step_cache, spec, relative_tol=args.tol).grads, 1e-4)
        return step_cache.loss

    timed = {
        "backward_s": lambda spec: backward(params, cache, spec, relative_tol=args.tol).adjoints,
        "step_s": one_step,
    }
    for name, spec in specs.items():
        for fn in timed.values():
            for _ in range(args.warmup):
                sync_torch(fn(spec))
    for _ in range(args.repeats):
        for name, spec in specs.items():
            for key, fn in timed.items():
                start = time.perf_counter()
                sync_torch(fn(spec))
                results[name][key].append(time.perf_counter() - start)
    rows_out = []
    for name, res in results.items():
        rows_out.append({
            "T": length, "method": name, "hidden": args.hidden, "batch": args.batch,
            "iterations": res["iterations"], "converged": res["converged"],
            "max_abs_diff_vs_sequential": res["max_abs_diff_vs_sequential"],
            "rel_diff_vs_sequential": res["rel_diff_vs_sequential"],
            "backward_median_s": statistics.median(res["backward_s"]),
            "backward_min_s": min(res["backward_s"]),
            "step_median_s": statistics.median(res["step_s"]),
            "step_min_s": min(res["step_s"]),
            "backward_s": res["backward_s"], "step_s": res["step_s"],
        })
    for name, why in skipped.items():
        rows_out.append({"T": length, "method": name, "hidden": args.hidden, "skipped": why})
        log.info("T=%d %s skipped: %s", length, name, why)
    return rows_out


def markdown(rows: list[dict]) -> str:
    lines = [("| T | method | parallel steps | backward ms (median) | vs BPTT | step ms (median) "
              "| vs BPTT | rel. grad diff vs BPTT |"), "|---|---|---|---|---|---|---|---|"]
    sequential = {r["T"]: r for r in rows if r["method"] == "sequential"}
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['T']} | {r['method']} | skipped: {r['skipped']} |||||| ")
            continue
        seq = sequential[r["T"]]
        lines.append(
            f"| {r['T']} | {r['method']} | {r['iterations']} | {1e3 * r['backward_median_s']:.3g} | "
            f"{seq['backward_median_s'] / r['backward_median_s']:.2f}× | "
            f"{1e3 * r['step_median_s']:.3g} | {seq['step_median_s'] / r['step_median_s']:.2f}× | "
            f"{r['rel_diff_vs_sequential']:.1e} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging()
    limit_threads(args.threads)
    seed_everything(args.seed)
    device = torch_device(args.device)
    dtype = getattr(torch, args.dtype)
    dataset = load_dataset("mnist", args.source, args.folder if args.source == "folder" else None,
                           embedded_dir=Path(__file__).resolve().parents[1] / "workflow" / "resources" / "mnist")
    if args.train:
        train_benchmark(args, dataset, device)
        return
    if args.solve:
        solve_benchmark(args, dataset, device)
        return
    rows = dataset_sequences(dataset, "train", 10)
    log.info("MNIST from %s: %d sequences of 100; hidden %d, batch %d, %s, %s, %d thread(s)",
             dataset.source, rows.shape[0], args.hidden, args.batch, args.dtype, device,
             args.threads)
    results = []
    for length in args.lengths:
        results.extend(benchmark_length(length, rows, args, device, dtype))
    table = markdown(results)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "device": device_description(device), "threads": args.threads, "dtype": args.dtype,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "scan_steps": {str(t): {a: scan_steps(t, f"scan_{a}") for a in args.scans} for t in args.lengths},
        "rows": results,
    }, indent=2))
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
