"""MADE sampling (paper §2.3): train the model from data, then sample it with every method.

``train(job)`` fits MADE by maximum likelihood in logit space and writes a checkpoint;
``run(job)`` samples one batch with one method (the ``run`` wildcard) on seeded noise and checks the
sample against the sequential one drawn in the same process from the same weights and noise.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ffsolve.data import load_prepared
from ffsolve.experiments.made_density import IMAGE_SHAPES, bits_per_dim, flatten_images, to_logit
from ffsolve.experiments.made_sampler import StreamingTrace, logistic_noise, solve_samples
from ffsolve.experiments.runs import parse_run_name
from ffsolve.jobs import Job, progress
from ffsolve.models.made import MADE, CheckpointError, load_checkpoint, save_checkpoint
from ffsolve.results import write_metrics, write_trace
from ffsolve.runtime import device_description, seed_everything, torch_device
from ffsolve.timing import time_call

log = logging.getLogger(__name__)

# Offsets that give each use of the root seed its own stream (init, data order, noise, ...).
SEED_OFFSETS = {"init": 0, "batches": 1, "test_noise": 2, "sample_noise": 3}
DATASET_SEED_OFFSET = {"mnist": 0, "cifar10": 1000, "digits": 2000}


class ConfigError(ValueError):
    """A made.* setting cannot be used; the message names the key."""


def stream_seed(seed: int, dataset: str, use: str) -> int:
    return int(seed) + DATASET_SEED_OFFSET.get(dataset, 3000) + 10 * SEED_OFFSETS[use]


def dataset_lambda(made_cfg: dict, dataset: str) -> float:
    lam = made_cfg["logit_lambda"].get(dataset)
    if lam is None or not 0.0 < float(lam) < 0.5:
        raise ConfigError(f"made.logit_lambda.{dataset} must be a number in (0, 0.5), got {lam!r}")
    return float(lam)


def check_checkpoint_fits(metadata: dict, model: MADE, made_cfg: dict, dataset: str, path) -> None:
    """Refuse a checkpoint whose size or λ disagrees with the config (naming the key to change)."""
    dims = int(np.prod(IMAGE_SHAPES[dataset]))
    if model.nin != dims:
        raise ConfigError(
            f"made.checkpoint.{dataset}: {path} models {model.nin} dimensions, but {dataset} has "
            f"{dims}; point it at a {dataset} checkpoint"
        )
    if model.hidden_sizes != list(made_cfg["hidden_sizes"]):
        raise ConfigError(
            f"made.hidden_sizes is {list(made_cfg['hidden_sizes'])} but {path} has hidden layers "
            f"{model.hidden_sizes}; set made.hidden_sizes to match the checkpoint"
        )
    lam = dataset_lambda(made_cfg, dataset)
    if "logit_lambda" in metadata and not math.isclose(metadata["logit_lambda"], lam):
        raise ConfigError(
            f"made.logit_lambda.{dataset} is {lam:g} but {path} was trained with "
            f"{metadata['logit_lambda']:g}; the sample space would not match the model"
        )


# --------------------------------------------------------------------------- training


def _evaluate(model: MADE, pixels: torch.Tensor, noise: torch.Tensor, lam: float,
              batch: int = 500) -> float:
    """Mean bits per dimension over ``pixels`` with fixed dequantisation ``noise``."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(pixels), batch):
            y = to_logit(pixels[start: start + batch], noise[start: start + batch], lam)
            total += float(bits_per_dim(y, *model(y), lam).sum())
    model.train()
    return total / len(pixels)


def fit(model: MADE, train_pixels: np.ndarray, test_pixels: np.ndarray, lam: float, *, steps: int,
        batch_size: int, lr: float, eval_every: int, seed: int, dataset: str, device) -> dict:
    """Adam on the mean bits/dim of random dequantised batches; returns the learning curve.

    Pixels are ``(N, D)`` uint8. Batches are drawn epoch by epoch without replacement; the test set
    is scored with one fixed dequantisation so successive evaluations are comparable.
    """
    model.to(device).train()
    train = torch.from_numpy(train_pixels).to(device)
    test = torch.from_numpy(test_pixels).to(device)
    batches = torch.Generator().manual_seed(stream_seed(seed, dataset, "batches"))
    test_noise = torch.rand(
        test.shape, generator=torch.Generator().manual_seed(stream_seed(seed, dataset, "test_noise"))
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    curve = {"step": [], "train_bpd": [], "test_bpd": []}
    order, cursor, running, seen = torch.randperm(len(train), generator=batches), 0, 0.0, 0
    start = time.perf_counter()
    for step in progress(range(1, steps + 1), desc=f"MADE {dataset}", total=steps):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(train), generator=batches), 0
        index = order[cursor: cursor + batch_size].to(device)
        cursor += batch_size
        noise = torch.rand(len(index), train.shape[1], generator=batches).to(device)
        y = to_logit(train[index], noise, lam)
        loss = bits_per_dim(y, *model(y), lam).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"MADE training diverged at step {step} (loss {value}); lower made.train.lr"
            )
        running, seen = running + value, seen + 1
        if step % eval_every == 0 or step == steps:
            test_bpd = _evaluate(model, test, test_noise, lam)
            curve["step"].append(step)
            curve["train_bpd"].append(running / seen)
            curve["test_bpd"].append(test_bpd)
            log.info("step %d: train %.4f bits/dim (mean since last report), test %.4f bits/dim",
                     step, running / seen, test_bpd)
            running, seen = 0.0, 0
    model.eval()
    return {**curve, "train_time_s": time.perf_counter() - start}


def train(job: Job) -> dict:
    """The ``made_train`` job: fit MADE on ``input.dataset``, save checkpoint and learning curve."""
    dataset = job.wildcards.dataset
    made_cfg, seed = job.config["made"], int(job.config["seed"])
    lam = dataset_lambda(made_cfg, dataset)
    cfg = made_cfg["train"]
    data = load_prepared(job.input.dataset)
    train_pixels, test_pixels = flatten_images(data.train_images), flatten_images(data.test_images)
    seed_everything(stream_seed(seed, dataset, "init"))
    model = MADE(train_pixels.shape[1], made_cfg["hidden_sizes"])
    device = torch_device(job.config["device"])
    log.info("MADE(%d, %s) on %s (%s, train %d / test %d) on %s", model.nin, model.hidden_sizes,
             dataset, data.source, len(train_pixels), len(test_pixels), device)
    curve = fit(
        model, train_pixels, test_pixels, lam, steps=cfg["steps"], batch_size=cfg["batch_size"],
        lr=cfg["lr"], eval_every=cfg["eval_every"], seed=seed, dataset=dataset, device=device,
    )
    record = {
        "experiment": "made",
        "dataset": dataset,
        "data_source": data.source,
        "nin": model.nin,
        "hidden_sizes": model.hidden_sizes,
        "logit_lambda": lam,
        **{k: cfg[k] for k in ("steps", "batch_size", "lr")},
        "final_train_bpd": curve["train_bpd"][-1],
        "final_test_bpd": curve["test_bpd"][-1],
        "curve": curve,
        "device": device_description(device),
        "threads": job.threads,
        "seed": seed,
    }
    save_checkpoint(model.cpu(), job.output.checkpoint, {
        k: record[k] for k in ("dataset", "data_source", "logit_lambda", "steps", "final_test_bpd", "seed")
    })
    _write_json(job.output.metrics, record)
    return record


# --------------------------------------------------------------------------- sampling


def snapshot_iterations(every: int, count: int) -> list[int]:
    """Iterations whose samples the grid shows: 0, every, 2·every, ... (``count`` of them)."""
    return [every * i for i in range(count)]


def run(job: Job) -> dict:
    """The ``made_sample`` job: one method, its trace, its timing, and the check against sequential."""
    dataset = job.wildcards.dataset
    made_cfg, seed = job.config["made"], int(job.config["seed"])
    cfg = made_cfg["sample"]
    method, block_size = parse_run_name(job.wildcards.run)
    lam = dataset_lambda(made_cfg, dataset)
    device = torch_device(job.config["device"])
    try:
        model, metadata = load_checkpoint(job.input.checkpoint)
    except CheckpointError as err:
        raise CheckpointError(f"made.checkpoint.{dataset}: {err}") from err
    check_checkpoint_fits(metadata, model, made_cfg, dataset, job.input.checkpoint)
    model.to(device)
    noise = logistic_noise(cfg["batch"], model.nin, stream_seed(seed, dataset, "sample_noise"), device)
    tol = float(cfg["tol"])

    def sample(recorder: Optional[StreamingTrace] = None):
        return solve_samples(model, noise, lam, method, block_size, tol, recorder)

    reference = solve_samples(model, noise, lam, "sequential")
    # The sequential run is its own reference; its determinism is still checked by the traced run.
    result = reference if method == "sequential" and block_size is None else sample()
    recorder = StreamingTrace(
        result.x, snapshot_iterations(cfg["snapshot_every"], cfg["snapshot_count"]), cfg["show"]
    )
    traced = sample(recorder)
    if traced.iterations != result.iterations or not torch.equal(traced.x, result.x):
        raise RuntimeError(
            f"{job.wildcards.run}: the traced run differs from the untraced one "
            f"({traced.iterations} vs {result.iterations} iterations); f is not deterministic"
        )
    timing = time_call(sample, repeats=job.config["timing"]["repeats"],
                       warmup=job.config["timing"]["warmup"])
    diff = float((result.x - reference.x).abs().max())
    exact = bool(torch.equal(result.x, reference.x))
    log.info("%s/%s: %d iterations of %d, converged=%s, max |diff| vs sequential %.3g, median %.4f s",
             dataset, job.wildcards.run, result.iterations, model.nin, result.converged, diff,
             timing.median_s)
    if result.iterations > model.nin:
        raise RuntimeError(f"{result.iterations} iterations for {model.nin} dimensions: solver bug")
    record = {
        "experiment": "made",
        "dataset": dataset,
        "method": method,
        "run": job.wildcards.run,
        "block_size": block_size,
        "tol": tol,
        "sequence_length": model.nin,
        "batch": cfg["batch"],
        "iterations": result.iterations,
        "converged": result.converged,
        "wall_time_s": timing.median_s,
        "timing": timing.as_dict(),
        "max_abs_diff_vs_sequential": diff,
        "exact_match": exact,
        "exact_match_tolerance": 0.0,
        "hidden_sizes": model.hidden_sizes,
        "logit_lambda": lam,
        "checkpoint": str(job.input.checkpoint),
        "image_shape": list(IMAGE_SHAPES[dataset]),
        "device": device_description(device),
        "threads": job.threads,
        "seed": seed,
    }
    arrays = recorder.arrays()
    write_trace(
        job.output.trace,
        error_mean=arrays["error"].mean(axis=1),
        error_std=arrays["error"].std(axis=1),
        change_mean=arrays["change"].mean(axis=1),
        change_std=arrays["change"].std(axis=1),
        snapshot_iterations=arrays["snapshot_iterations"],
        snapshots=arrays["snapshots"].astype(np.float32),
        image_shape=np.asarray(IMAGE_SHAPES[dataset]),
        logit_lambda=np.asarray(lam),
    )
    return write_metrics(job.output.metrics, record)


def _write_json(path, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, path)
