"""DenseNet inference by Jacobi iteration over layers (reference §2.2): training and solver runs.

``train(job)`` fits the small DenseNet-BC of the embedded default on MNIST. ``solve(job)`` runs
every configured method on one dataset *in one process* (same weights, same inputs, DESIGN.md §7)
and writes one ``metrics.json`` + ``trace.npz`` per run:

1. reference: the ordinary forward pass (``sequential``) gives the logits every method must match;
2. trace runs (not timed): logits of every iterate, for the error and top-k curves;
3. from the traces, the iteration from which every image's descending top-1 / top-5 list stays
   equal to the reference's (``densenet_stats``);
4. timed runs (``ffsolve.timing.time_call``, warm-up excluded): to exactness (``tol=0``, stopping
   inside the solver), and stopped after the stable-top-5 iteration, with per-call timestamps.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ffsolve.data import load_prepared
from ffsolve.experiments import densenet_inputs as inputs
from ffsolve.experiments import densenet_stats as stats
from ffsolve.experiments.densenet_solvers import LayerSystem
from ffsolve.experiments.runs import parse_run_name, run_names
from ffsolve.jobs import Job, progress
from ffsolve.models.densenet import DenseNet, load_checkpoint, save_checkpoint
from ffsolve.results import write_metrics, write_trace
from ffsolve.runtime import device_description, seed_everything, torch_device
from ffsolve.timing import time_call

log = logging.getLogger(__name__)

SMALL_MODEL_KEYS = ("growth_rate", "block_config", "num_init_features", "bn_size", "compression",
                    "stem_stride")


def small_model_kwargs(cfg: dict) -> dict:
    """Constructor arguments of the MNIST DenseNet-BC from ``config["densenet"]["mnist"]``."""
    kwargs = {key: cfg[key] for key in SMALL_MODEL_KEYS}
    kwargs["block_config"] = tuple(kwargs["block_config"])
    return {**kwargs, "num_classes": 10, "in_channels": 1, "stem": "small"}


# ------------------------------------------------------------------------------------------------
# Training (embedded default)
# ------------------------------------------------------------------------------------------------


def fit(model: DenseNet, images: torch.Tensor, labels: torch.Tensor, *, epochs: int,
        batch_size: int, learning_rate: float, seed: int) -> list[float]:
    """Adam with a cosine learning-rate decay; returns the mean loss of each epoch."""
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = -(-len(images) // batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    losses = []
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for start in progress(range(0, len(images), batch_size), f"epoch {epoch + 1}/{epochs}",
                              total=steps_per_epoch):
            index = order[start: start + batch_size]
            loss = F.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
        losses.append(total / len(images))
        log.info("epoch %d: mean training loss %.4f", epoch + 1, losses[-1])
    return losses


@torch.no_grad()
def accuracy(model: DenseNet, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    correct = sum(
        int((model(images[i: i + batch]).argmax(1) == labels[i: i + batch]).sum())
        for i in range(0, len(images), batch)
    )
    return correct / len(images)


def train(job: Job) -> dict:
    """Train the small DenseNet-BC on the prepared MNIST; write the checkpoint and a summary."""
    cfg = job.config["densenet"]["mnist"]
    seed = int(job.config["seed"])
    seed_everything(seed)
    data = load_prepared(job.input.data)
    kwargs = small_model_kwargs(cfg)
    model = DenseNet(**kwargs)
    train_x, train_y = inputs.mnist_tensor(data.train_images), torch.from_numpy(data.train_labels)
    test_x, test_y = inputs.mnist_tensor(data.test_images), torch.from_numpy(data.test_labels)
    start = time.perf_counter()
    losses = fit(model, train_x, train_y, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                 learning_rate=cfg["learning_rate"], seed=seed)
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(model, test_x, test_y)
    log.info("test accuracy %.4f on %d images after %.1f s of training", test_accuracy,
             len(test_y), seconds)
    save_checkpoint(model, kwargs, job.output.model)
    summary = {
        "dataset": "mnist",
        "data_source": data.source,
        "train_images": len(train_y),
        "test_images": len(test_y),
        "test_accuracy": test_accuracy,
        "epoch_losses": losses,
        "train_seconds": seconds,
        "dense_layers": model.num_dense_layers,
        "parameters": sum(p.numel() for p in model.parameters()),
        "model": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
        "seed": seed,
        "threads": job.threads,
    }
    _write_json(job.output.summary, summary)
    return summary


# ------------------------------------------------------------------------------------------------
# Solver runs
# ------------------------------------------------------------------------------------------------


def load_problem(job: Job, dataset: str):
    """(model, list of input batches, labels or None, description) for ``dataset``."""
    cfg = job.config["densenet"]
    seed = int(job.config["seed"])
    if dataset == "mnist":
        model = load_checkpoint(job.input.model)
        data = load_prepared(job.input.data)
        count = min(cfg["mnist"]["eval_images"], len(data.test_labels))
        batch = inputs.mnist_tensor(data.test_images[:count])
        return model, [batch], data.test_labels[:count], "small DenseNet-BC trained on MNIST"
    if dataset == "imagenet_val":
        sub = cfg["imagenet_val"]
        model = inputs.load_densenet201_pretrained(
            sub["weights_file"], sub["download"], str(Path("resources") / "weights")
        )
        batches, labels = inputs.imagenet_batches(
            job.config["data"]["imagenet_val"]["folder"], sub["images"], seed, sub["image_size"]
        )
        return model, batches, labels, "DenseNet-201, torchvision ImageNet weights"
    if dataset == "random_speed_only":
        sub = cfg["random_speed_only"]
        model = inputs.random_densenet201(seed)
        batch = inputs.random_batch(sub["images"], sub["image_size"], seed + 1)
        return model, [batch], None, f"DenseNet-201 architecture, {inputs.SPEED_ONLY_LABEL}"
    raise ValueError(f"densenet dataset must be one of {list(inputs.DATASETS)}, got {dataset!r}")


class CallClock:
    """Per-call timestamps inside timed runs (seconds since the run started), device-synchronised."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.runs: list[list[float]] = []

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.runs.append([])

    def tick(self, _output) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.runs[-1].append(time.perf_counter() - self.t0)

    def median(self, skip: int) -> np.ndarray:
        """Median over the timed runs (the first ``skip`` are warm-up) of each call's timestamp."""
        return np.median(np.asarray(self.runs[skip:], dtype=np.float64), axis=0)


@torch.no_grad()
def trace_logits(system: LayerSystem, method: str, x: torch.Tensor, exact_state=None):
    """Logits of every iterate ``(iterations + 1, N, C)`` (index 0: all layers zero), and the outcome.

    ``sequential``'s iterates are the forward pass's prefixes: after t layers, layers >= t are
    still zero; they need the exact layer outputs ``exact_state``.
    """
    stem = system.model.stem(x)
    first = system.readout(stem, system.zeros(stem))
    if method == "sequential":
        frames = [system.readout(stem, s).cpu() for s in system.prefix_states(exact_state)]
        return torch.stack(frames).numpy(), None
    frames = [first.cpu()]
    outcome = system.run(method, x, on_call=lambda s: frames.append(system.readout(stem, s).cpu()))
    return torch.stack(frames).numpy(), outcome


@dataclass
class Measurement:
    """Everything :func:`measure` finds for each run name (the inputs of the records)."""

    runs: list
    parsed: dict
    length: int  # T, dense layers
    reference: np.ndarray  # (N, C) forward-pass logits of every image
    padded: dict  # run -> (T+1, N, C) logits of every iterate, padded past the last one
    outcomes: dict  # run -> list of Outcome (None for sequential), one per batch
    stable: dict  # run -> (top-1 mismatch, top-5 mismatch, stable top-1 it., stable top-5 it.)
    timings: dict  # run -> {"exact": [Timing], "top5": [Timing | None], "calls": [array]}


def solve(job: Job) -> dict:
    """Every configured method on ``job.wildcards.dataset``; one metrics.json + trace.npz per run."""
    cfg = job.config["densenet"]
    dataset = job.wildcards.dataset
    seed = int(job.config["seed"])
    seed_everything(seed)
    device = torch_device(job.config["device"])
    model, batches, labels, description = load_problem(job, dataset)
    runs = run_names(cfg["methods"], cfg["block_sizes"])
    log.info("%s: %d batch(es) of %s, runs %s", description, len(batches),
             tuple(batches[0].shape), runs)
    m = measure(model, batches, runs, job.config["timing"], device, dataset)
    return write_records(job, dataset, description, batches, labels, m, device, seed)


def measure(model: DenseNet, batches, runs, timing_cfg: dict, device, name: str = "") -> Measurement:
    """Trace runs, stable top-k iterations and timed runs of every run, in this process."""
    model = model.to(device).eval()
    batches = [b.to(device) for b in batches]
    parsed = {run: parse_run_name(run) for run in runs}
    systems = {run: LayerSystem(model, block) for run, (_, block) in parsed.items()}
    length = next(iter(systems.values())).length
    dataset = name

    # 1-2. Reference and trace runs.
    references, traces, outcomes = [], {run: [] for run in runs}, {run: [] for run in runs}
    with torch.no_grad():
        for x in progress(batches, f"{dataset}: traces"):
            reference = model(x)
            references.append(reference.cpu().numpy())
            exact = systems[runs[0]].jacobi(x).state  # layer outputs for sequential's prefixes
            for run in runs:
                method, _ = parsed[run]
                logits, outcome = trace_logits(systems[run], method, x, exact)
                traces[run].append(logits)
                outcomes[run].append(outcome)
    reference_all = np.concatenate(references)

    # 3. Descending top-k agreement, "stays converged" rule, over every image.
    padded = {
        run: np.concatenate([stats.pad_to(t, length + 1) for t in traces[run]], axis=1)
        for run in runs
    }
    stable = {}
    for run in runs:
        mismatch1 = stats.topk_mismatch(padded[run], reference_all, 1)
        mismatch5 = stats.topk_mismatch(padded[run], reference_all, min(5, reference_all.shape[-1]))
        stable[run] = (mismatch1, mismatch5, stats.batch_stable_iteration(mismatch1),
                       stats.batch_stable_iteration(mismatch5))

    # 4. Timed runs, separate from the trace runs.
    timings = {run: {"exact": [], "top5": [], "calls": []} for run in runs}
    for i, x in enumerate(progress(batches, f"{dataset}: timing")):
        for run in runs:
            method, _ = parsed[run]
            system = systems[run]
            clock = CallClock(device)
            if method == "sequential":
                exact_timing = time_call(lambda: system.sequential(x), **_timing_args(timing_cfg))
                top5_timing = exact_timing  # the forward pass cannot stop early: same run
            else:
                def timed(budget=None, clock=None):
                    if clock is not None:
                        clock.start()
                    tick = None if clock is None else clock.tick
                    return system.run(method, x, max_iters=budget, tick=tick).logits

                exact_timing = time_call(lambda: timed(None, clock), **_timing_args(timing_cfg))
                timings[run]["calls"].append(clock.median(timing_cfg["warmup"]))
                budget = stable[run][3]
                top5_timing = None
                if budget >= outcomes[run][i].iterations:
                    top5_timing = exact_timing  # stopping there is the run to exactness
                elif budget != stats.NEVER:
                    # Stops inside the solver after the stable-top-5 iteration (found by the trace
                    # run: an oracle stopping point, the same one the paper's estimate used).
                    top5_timing = time_call(lambda: timed(max(budget, 1)), **_timing_args(timing_cfg))
            timings[run]["exact"].append(exact_timing)
            timings[run]["top5"].append(top5_timing)

    return Measurement(runs, parsed, length, reference_all, padded, outcomes, stable, timings)


def write_records(job, dataset, description, batches, labels, m: Measurement, device, seed) -> dict:
    """One metrics.json and trace.npz per run."""
    runs, parsed, length, reference_all = m.runs, m.parsed, m.length, m.reference
    padded, outcomes, stable, timings = m.padded, m.outcomes, m.stable, m.timings
    paths = _outputs_by_run(job)
    sequential_time = None
    records = {}
    for run in runs:
        method, block = parsed[run]
        records[run] = _record(job, dataset, run, method, block, length, description, batches,
                               labels, reference_all, padded[run], outcomes[run], stable[run],
                               timings[run], device, seed)
    if "sequential" in records:
        sequential_time = records["sequential"]["wall_time_s"]
    for run in runs:
        record = records[run]
        method = parsed[run][0]
        if sequential_time is not None:
            record["speedup_vs_sequential"] = sequential_time / record["wall_time_s"]
            if record["wall_time_top5_s"] is not None:
                record["speedup_top5_vs_sequential"] = sequential_time / record["wall_time_top5_s"]
        log.info("%s %s: %d of %d iterations, stable top-5 from %s, %.4g s (top-5 %s s), "
                 "max |logit diff| %.3g, exact_match %s", dataset, run, record["iterations"],
                 length, record["stable_top5_iteration"], record["wall_time_s"],
                 record["wall_time_top5_s"], record["max_abs_diff_vs_sequential"],
                 record["exact_match"])
        error, change = stats.logit_norms(padded[run], reference_all)
        mismatch1, mismatch5 = stable[run][0], stable[run][1]
        write_trace(
            paths[run]["trace"],
            logit_error=error,
            logit_change=change,
            top1_mismatch=mismatch1,
            top5_mismatch=mismatch5,
            time_s=_time_axis(method, timings[run], length),
            iterations=np.asarray([record["iterations"]]),
        )
        write_metrics(paths[run]["metrics"], record)
    return records


def _record(job, dataset, run, method, block, length, description, batches, labels,
            reference, padded, outcomes, stable, timing, device, seed) -> dict:
    cfg = job.config["densenet"]
    final = padded[-1]
    diff = float(np.max(np.abs(final - reference)))
    scale = float(np.max(np.abs(reference)))
    allowed = cfg["match_atol"] + cfg["match_rtol"] * scale
    if method == "sequential":
        iterations, converged = length, True
    else:
        iterations = max(o.iterations for o in outcomes)
        converged = all(o.converged for o in outcomes)
    exact = [t.median_s for t in timing["exact"]]
    top5 = None if any(t is None for t in timing["top5"]) else [t.median_s for t in timing["top5"]]
    record = {
        "experiment": "densenet",
        "dataset": dataset,
        "label": description,
        "speed_only": dataset == "random_speed_only",
        "method": method,
        "run": run,
        "block_size": block,
        "tol": 0.0,
        "sequence_length": length,
        "iterations": iterations,
        "iterations_per_batch": [length if o is None else o.iterations for o in outcomes],
        "converged": converged,
        "stable_top1_iteration": _never_as_none(stable[2]),
        "stable_top5_iteration": _never_as_none(stable[3]),
        "wall_time_s": float(np.mean(exact)),
        "wall_time_top5_s": None if top5 is None else float(np.mean(top5)),
        "timing": {
            "per_batch_median_s": exact,
            "per_batch_top5_median_s": top5,
            "iqr_s": float(np.mean([t.iqr_s for t in timing["exact"]])),
            "repeats": timing["exact"][0].repeats,
            "warmup": timing["exact"][0].warmup,
            "aggregate": "mean over input batches of the median over repeats",
        },
        "max_abs_diff_vs_sequential": diff,
        "exact_match": diff <= allowed,
        "exact_match_tolerance": {"atol": cfg["match_atol"], "rtol": cfg["match_rtol"],
                                  "allowed_abs_diff": allowed,
                                  "rule": "max|logits - forward logits| <= atol + rtol * max|forward logits|"},
        "images": int(reference.shape[0]),
        "batches": len(batches),
        "input_shapes": sorted({tuple(b.shape) for b in batches}),
        "device": device_description(device),
        "threads": job.threads,
        "seed": seed,
    }
    if labels is not None:
        record["forward_top1_accuracy"] = float(np.mean(reference.argmax(-1) == labels))
        if reference.shape[-1] >= 5:
            record["forward_top5_accuracy"] = float(
                np.mean(np.any(stats.topk(reference, 5) == labels[:, None], axis=-1))
            )
    return record


def _time_axis(method: str, timing: dict, length: int) -> np.ndarray:
    """Measured seconds at which iterate k is available, k = 0..T (mean over batches).

    Parallel methods: per-call timestamps of the timed runs to exactness (median over repeats).
    ``sequential``: the measured forward time spread evenly over its T layers (the forward pass
    has no hooks inside; its total is measured).
    """
    if method == "sequential":
        total = float(np.mean([t.median_s for t in timing["exact"]]))
        return np.linspace(0.0, total, length + 1)
    per_batch = [stats.pad_to(np.concatenate([[0.0], calls]), length + 1) for calls in timing["calls"]]
    return np.mean(per_batch, axis=0)


def _timing_args(cfg: dict) -> dict:
    return {"repeats": cfg["repeats"], "warmup": cfg["warmup"]}


def _never_as_none(value: int):
    return None if value == stats.NEVER else int(value)


def _outputs_by_run(job: Job) -> dict:
    """Map each run name to its metrics/trace outputs (the run is the folder's name)."""
    paths: dict = {}
    for kind in ("metrics", "trace"):
        for path in job.output[kind] if not isinstance(job.output[kind], str) else [job.output[kind]]:
            paths.setdefault(Path(path).parent.name, {})[kind] = str(path)
    return paths


def _write_json(path: str, data: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)
