"""MADE sampling benchmark: iterations and wall-clock of Jacobi and GS-Jacobi against both sequential
baselines, the naive loop (``sequential``: one full MADE pass per dimension) and ``sequential_cache``
(first layer updated by a rank-1 term per dimension, later layers only as far as the next output
reads).

The same harness as the ``made_measure`` rule (DESIGN.md §7): every method in one process, on the
same weights and the same seeded noise, ``--warmup`` untimed rounds then ``--repeats`` timed
rounds interleaved round-robin (so a burst of load from other processes hits every method alike),
and the output of the timed calls checked bit for bit against the sequential sample
(``sequential_cache`` within its stated float32 tolerance). ``--unrestricted-cache`` adds
``sequential_cache_unrestricted``: the same cached first layer, but every unit of the later layers
computed at every step, to show what the mask restriction buys.

    # embedded default (train as the workflow does, or reuse its checkpoint)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/made_benchmark.py --source embedded \
        --checkpoint results/made/mnist/model.pt
    # full MNIST from the shared folder
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/made_benchmark.py --source folder \
        --folder ../shared/data --steps 3000

Prints a Markdown table and writes the run records as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ffsolve.data import load_dataset
from ffsolve.experiments.made.density import flatten_images
from ffsolve.experiments.made.experiment import Training, fit
from ffsolve.experiments.made.model import MADE, load_checkpoint
from ffsolve.experiments.made.system import CachedSampler, cache_tolerance, candidates, logistic_noise, run_specs
from ffsolve.workflow.jobs import setup_logging
from ffsolve.kit import Candidate, RunContext, RunSpec, measure, record, seed_stream, write_json
from ffsolve.kit.tables import runs_table
from ffsolve.runtime import device_description, limit_threads, seed_everything, torch_device

log = logging.getLogger("made_benchmark")
REPO = Path(__file__).resolve().parents[1]


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
    parser.add_argument("--unrestricted-cache", action="store_true",
                        help="also time sequential_cache without the mask restriction of the later layers")
    parser.add_argument("--out", default="results/made/benchmark.json",
                        help="JSON with every number (results/ is not in git)")
    return parser.parse_args(argv)


def get_model(args, device):
    if args.checkpoint:
        model, metadata = load_checkpoint(args.checkpoint)
        return model.to(device), {"checkpoint": args.checkpoint, **metadata}
    data = load_dataset("mnist", args.source, args.folder if args.source == "folder" else None,
                        embedded_dir=REPO / "workflow" / "resources" / "mnist")
    train, test = flatten_images(data.train_images), flatten_images(data.test_images)
    seed_everything(seed_stream(args.seed, "made", "mnist", "init"))
    model = MADE(train.shape[1], args.hidden)
    training = Training(steps=args.steps, batch=100, lr=1e-3, eval_every=max(args.steps // 4, 1))
    curve = fit(model, train, test, args.lam, training, seed=args.seed, dataset="mnist", device=device)
    return model, {"trained_steps": args.steps, "train_images": len(train),
                   "final_test_bpd": curve["test_bpd"][-1], "train_time_s": curve["train_time_s"]}


def unrestricted_cache(model, noise, lam) -> Candidate:
    """``sequential_cache`` computing the later layers in full at every step (no mask restriction)."""
    sampler = CachedSampler(model, noise, lam, restrict=False)

    def program():
        result = sampler.run()
        result.method = "sequential_cache_unrestricted"
        return result

    return Candidate(RunSpec("sequential_cache_unrestricted"), program,
                     tolerance=cache_tolerance(model, lam, noise), extra={"restrict": False})


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    threads = limit_threads(args.threads)
    device = torch_device(args.device)
    model, model_info = get_model(args, device)
    model.eval()
    noise = logistic_noise(args.batch, model.nin, seed_stream(args.seed, "made", "mnist", "sample_noise"), device)
    runs = run_specs(["sequential", "sequential_cache", "jacobi", "gs_jacobi"], args.block_sizes)
    timed = candidates(model, noise, args.lam, runs)
    if args.unrestricted_cache:
        timed.append(unrestricted_cache(model, noise, args.lam))
    measurements = measure(timed, repeats=args.repeats, warmup=args.warmup)
    context = RunContext("made", "mnist", args.seed, device_description(device), args.batch, threads)
    records = [record(m, context) for m in measurements.values()]
    report = {
        "source": args.source if not args.checkpoint else f"checkpoint {args.checkpoint}",
        "model": model_info, "nin": model.nin, "hidden_sizes": model.hidden_sizes, "runs": records,
    }
    write_json(args.out, report)
    print(f"MADE {model.hidden_sizes}, {model.nin} dims, batch {args.batch}, {context.device}, "
          f"{threads} thread(s), {args.repeats} repeats; model: {model_info}")
    print(runs_table(records))
    if not all(r["bitwise_equal"] or r["within_tolerance"] for r in records):
        print("ERROR: a method did not reproduce the sequential sample (bit for bit, or within its "
              "declared tolerance)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
