"""MADE sampling benchmark: iterations and wall-clock of Jacobi and GS-Jacobi against sequential.

Everything in one process, on the same weights and the same seeded noise (DESIGN.md §7): each
method is solved once untraced to check it equals the sequential sample bit for bit, then timed
``--repeats`` times after ``--warmup`` untimed runs. Repeats are interleaved across methods
(round-robin) so that a burst of load from other processes hits every method alike.

    # embedded default (train as the workflow does, or reuse its checkpoint)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/made_benchmark.py --source embedded \
        --checkpoint results/made/mnist/model.pt
    # full MNIST from the shared folder
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/made_benchmark.py --source folder \
        --folder ../shared/data --steps 3000

Prints a Markdown table and writes the numbers as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

from ffsolve.data import load_dataset
from ffsolve.experiments.made import fit, stream_seed
from ffsolve.experiments.made_density import flatten_images
from ffsolve.experiments.made_sampler import logistic_noise, solve_samples
from ffsolve.jobs import setup_logging
from ffsolve.models.made import MADE, load_checkpoint
from ffsolve.runtime import device_description, limit_threads, seed_everything, torch_device
from ffsolve.timing import synchronize

log = logging.getLogger("made_benchmark")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=["embedded", "folder"], default="embedded")
    parser.add_argument("--folder", default="../shared/data", help="folder holding MNIST/raw (source folder)")
    parser.add_argument("--checkpoint", help="sample this MADE checkpoint instead of training one")
    parser.add_argument("--steps", type=int, default=3000, help="training steps when no checkpoint")
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--lam", type=float, default=1e-6, help="logit-transform λ (MNIST 1e-6)")
    parser.add_argument("--batch", type=int, default=100, help="samples per solve (paper 100)")
    parser.add_argument("--block-sizes", type=int, nargs="*", default=[28, 112])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", default="results/made/benchmark.json",
                        help="JSON with every number (results/ is not in git)")
    return parser.parse_args(argv)


def get_model(args, device):
    if args.checkpoint:
        model, metadata = load_checkpoint(args.checkpoint)
        return model.to(device), {"checkpoint": args.checkpoint, **metadata}
    data = load_dataset("mnist", args.source, args.folder if args.source == "folder" else None)
    train, test = flatten_images(data.train_images), flatten_images(data.test_images)
    seed_everything(stream_seed(args.seed, "mnist", "init"))
    model = MADE(train.shape[1], args.hidden)
    curve = fit(model, train, test, args.lam, steps=args.steps, batch_size=100, lr=1e-3,
                eval_every=max(args.steps // 4, 1), seed=args.seed, dataset="mnist", device=device)
    return model, {"trained_steps": args.steps, "train_images": len(train),
                   "final_test_bpd": curve["test_bpd"][-1], "train_time_s": curve["train_time_s"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    threads = limit_threads(args.threads)
    device = torch_device(args.device)
    model, model_info = get_model(args, device)
    model.eval()
    noise = logistic_noise(args.batch, model.nin, stream_seed(args.seed, "mnist", "sample_noise"), device)
    runs = [("sequential", None), ("jacobi", None)] + [("gs_jacobi", b) for b in args.block_sizes]

    def solve(method, block):
        return solve_samples(model, noise, args.lam, method, block)

    reference = solve("sequential", None)
    results = {}
    for method, block in runs:
        res = solve(method, block)
        results[(method, block)] = {"iterations": res.iterations,
                                    "exact_match": bool(torch.equal(res.x, reference.x)),
                                    "times_s": []}
        for _ in range(args.warmup):
            synchronize(solve(method, block).x)
    for _ in range(args.repeats):  # round-robin: load bursts hit every method alike
        for method, block in runs:
            start = time.perf_counter()
            synchronize(solve(method, block).x)
            results[(method, block)]["times_s"].append(time.perf_counter() - start)

    seq = results[("sequential", None)]
    seq_time = statistics.median(seq["times_s"])
    rows, table = [], [
        "| method | iterations | iteration ratio | time (s, median) | spread (min-max) | time ratio | exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for (method, block), r in results.items():
        median = statistics.median(r["times_s"])
        name = method if block is None else f"{method} (block {block})"
        row = {"method": method, "block_size": block, "iterations": r["iterations"],
               "iteration_ratio": seq["iterations"] / r["iterations"], "median_s": median,
               "min_s": min(r["times_s"]), "max_s": max(r["times_s"]),
               "time_ratio": seq_time / median, "exact_match": r["exact_match"],
               "times_s": r["times_s"]}
        rows.append(row)
        table.append(f"| {name} | {r['iterations']} | {row['iteration_ratio']:.1f}x | {median:.4f} | "
                     f"{row['min_s']:.4f}-{row['max_s']:.4f} | {row['time_ratio']:.1f}x | {r['exact_match']} |")
    report = {
        "source": args.source if not args.checkpoint else f"checkpoint {args.checkpoint}",
        "model": model_info, "nin": model.nin, "hidden_sizes": model.hidden_sizes,
        "batch": args.batch, "repeats": args.repeats, "warmup": args.warmup, "threads": threads,
        "device": device_description(device), "torch": torch.__version__, "seed": args.seed,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"MADE {model.hidden_sizes}, {model.nin} dims, batch {args.batch}, {report['device']}, "
          f"{threads} thread(s), {args.repeats} repeats; model: {model_info}")
    print("\n".join(table))
    if not all(r["exact_match"] for r in rows):
        print("ERROR: a method did not reproduce the sequential sample", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
