"""MADE sampling (paper §2.3): train the model from data, then sample it with every method.

:func:`train` fits MADE by maximum likelihood in logit space and writes a checkpoint;
:func:`measure` samples one seeded batch with every configured method in one process, on the
same weights and noise, through the shared harness (timed repeats interleaved, the timed output
checked bit for bit against the sequential sample), and writes one record and trace per run.
``train_job`` and ``measure_job`` are the thin adapters the ``made_train`` and ``made_measure``
rules call; they read only the job's params and paths, never the config.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Mapping, Optional, Union

import numpy as np
import torch

import ffsolve

from ffsolve.data import load_prepared
from ffsolve.experiments.made.density import IMAGE_SHAPES, bits_per_dim, flatten_images, to_logit
from ffsolve.experiments.made.model import MADE, CheckpointError, load_checkpoint, save_checkpoint
from ffsolve.experiments.made.system import BLOCKED, candidates, logistic_noise, sampling_map
from ffsolve.kit import (
    Job,
    RunContext,
    SettingsError,
    TimingSettings,
    device_description,
    expand_runs,
    loop_pilot,
    measure_and_write,
    measure_arguments,
    pilot_steps,
    progress,
    seed_everything,
    seed_stream,
    settings_from,
    split_auto,
    torch_device,
    torch_generator,
    write_json,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Training:
    """``made.train``: Adam on dequantised images."""

    steps: int
    batch: int
    lr: float
    eval_every: int


@dataclass(frozen=True)
class Sampling:
    """``made.sample``: one batch sampled by every method on the same seeded noise."""

    batch: int
    tol: float
    snapshot_every: int
    snapshot_count: int
    show: int


def _check_lambda(lam: float) -> None:
    if not 0.0 < lam < 0.5:
        raise SettingsError(
            f"made.logit_lambda (or made.per_dataset.<dataset>.logit_lambda) must be in (0, 0.5), got {lam!r}"
        )


@dataclass(frozen=True)
class TrainSettings:
    """What ``made_train`` reads of one dataset's ``made`` settings."""

    hidden_sizes: tuple[int, ...]
    logit_lambda: float
    train: Training

    def __post_init__(self):
        _check_lambda(self.logit_lambda)


@dataclass(frozen=True)
class MeasureSettings:
    """What ``made_measure`` reads of one dataset's ``made`` settings."""

    hidden_sizes: tuple[int, ...]
    logit_lambda: float
    methods: tuple[str, ...]
    block_sizes: tuple[int, ...]
    sample: Sampling
    frontier_tols: Union[tuple[float, ...], dict] = ()  # a list, or {method or run name: list}

    def __post_init__(self):
        _check_lambda(self.logit_lambda)

    @property
    def specs(self):
        """Every run: the methods (blocked ones per block size), each parallel method again at
        each frontier tolerance > 0 (``jacobi_t1e-04``), and ``auto`` if listed."""
        return expand_runs(self.methods, self.block_sizes, blocked=BLOCKED, tols=self.frontier_tols)

    @property
    def runs(self) -> list[str]:
        return [spec.name for spec in self.specs]


def sequential_pilot(model: MADE, noise: torch.Tensor, lam: float):
    """``auto``'s pilot of the sequential loop: its first 2% of the D steps (one full MADE pass
    each), scaled by D / k."""
    dims = noise.shape[1]
    f = sampling_map(model, noise, lam)
    return loop_pilot(lambda k: ffsolve.solve(f, torch.zeros_like(noise), method="sequential",
                                              max_iters=k, axis=1), pilot_steps(dims), dims)


def check_checkpoint_fits(metadata: dict, model: MADE, hidden_sizes, lam: float, dataset: str, path) -> None:
    """Refuse a checkpoint whose size or λ disagrees with the settings (naming the key to change)."""
    dims = int(np.prod(IMAGE_SHAPES[dataset]))
    if model.nin != dims:
        raise SettingsError(
            f"made.per_dataset.{dataset}.checkpoint: {path} models {model.nin} dimensions, but "
            f"{dataset} has {dims}; point it at a {dataset} checkpoint"
        )
    if model.hidden_sizes != list(hidden_sizes):
        raise SettingsError(
            f"made.hidden_sizes is {list(hidden_sizes)} but {path} has hidden layers "
            f"{model.hidden_sizes}; set made.hidden_sizes (or made.per_dataset.{dataset}.hidden_sizes) "
            "to match the checkpoint"
        )
    if "logit_lambda" in metadata and not math.isclose(metadata["logit_lambda"], lam):
        raise SettingsError(
            f"made.logit_lambda for {dataset} is {lam:g} but {path} was trained with "
            f"{metadata['logit_lambda']:g} (set made.per_dataset.{dataset}.logit_lambda); the "
            "sample space would not match the model"
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


def fit(model: MADE, train_pixels: np.ndarray, test_pixels: np.ndarray, lam: float, training: Training,
        *, seed: int, dataset: str, device="cpu") -> dict:
    """Adam on the mean bits/dim of random dequantised batches; returns the learning curve.

    Pixels are ``(N, D)`` uint8. Batches are drawn epoch by epoch without replacement; the test set
    is scored with one fixed dequantisation so successive evaluations are comparable.
    """
    model.to(device).train()
    train = torch.from_numpy(train_pixels).to(device)
    test = torch.from_numpy(test_pixels).to(device)
    batches = torch_generator(seed, "made", dataset, "batches")
    test_noise = torch.rand(test.shape, generator=torch_generator(seed, "made", dataset, "test_noise")).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=training.lr)
    curve = {"step": [], "train_bpd": [], "test_bpd": []}
    order, cursor, running, seen = torch.randperm(len(train), generator=batches), 0, 0.0, 0
    start = time.perf_counter()
    steps, batch_size = training.steps, training.batch
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
        if step % training.eval_every == 0 or step == steps:
            test_bpd = _evaluate(model, test, test_noise, lam)
            curve["step"].append(step)
            curve["train_bpd"].append(running / seen)
            curve["test_bpd"].append(test_bpd)
            log.info("step %d: train %.4f bits/dim (mean since last report), test %.4f bits/dim",
                     step, running / seen, test_bpd)
            running, seen = 0.0, 0
    model.eval()
    return {**curve, "train_time_s": time.perf_counter() - start}


def train(settings: TrainSettings, *, dataset: str, seed: int, data, checkpoint, record,
          device: str = "auto", threads: Optional[int] = None) -> dict:
    """Fit MADE on the prepared dataset at ``data``; write the checkpoint and the training record
    (its learning curve) to ``record``."""
    lam, training = settings.logit_lambda, settings.train
    prepared = load_prepared(data)
    train_pixels, test_pixels = flatten_images(prepared.train_images), flatten_images(prepared.test_images)
    seed_everything(seed_stream(seed, "made", dataset, "init"))
    model = MADE(train_pixels.shape[1], settings.hidden_sizes)
    torch_dev = torch_device(device)
    log.info("MADE(%d, %s) on %s (%s, train %d / test %d) on %s", model.nin, model.hidden_sizes,
             dataset, prepared.source, len(train_pixels), len(test_pixels), torch_dev)
    curve = fit(model, train_pixels, test_pixels, lam, training, seed=seed, dataset=dataset, device=torch_dev)
    summary = {
        "experiment": "made",
        "dataset": dataset,
        "data_source": prepared.source,
        "nin": model.nin,
        "hidden_sizes": model.hidden_sizes,
        "logit_lambda": lam,
        "steps": training.steps,
        "batch_size": training.batch,
        "lr": training.lr,
        "final_train_bpd": curve["train_bpd"][-1],
        "final_test_bpd": curve["test_bpd"][-1],
        "curve": curve,
        "device": device_description(torch_dev),
        "seed": seed,
        **({"threads": int(threads)} if threads else {}),
    }
    save_checkpoint(model.cpu(), checkpoint, {
        k: summary[k] for k in ("dataset", "data_source", "logit_lambda", "steps", "final_test_bpd", "seed")
    })
    write_json(record, summary)
    return summary


def train_job(job: Job) -> dict:
    """The ``made_train`` rule."""
    return train(
        settings_from(TrainSettings, job.params.settings, "made"),
        dataset=job.wildcards.dataset,
        data=job.input.dataset,
        checkpoint=job.output.checkpoint,
        record=job.output.metrics,
        seed=job.params.seed,
        device=job.params.device,
        threads=job.threads,
    )


# --------------------------------------------------------------------------- sampling


def snapshot_iterations(every: int, count: int) -> list[int]:
    """Iterations whose samples the grid shows: 0, every, 2·every, ... (``count`` of them)."""
    return [every * i for i in range(count)]


def measure(settings: MeasureSettings, *, dataset: str, seed: int, timing: TimingSettings,
            metrics: Mapping[str, str], traces: Mapping[str, str], threads: Optional[int] = None,
            autotune: Optional[str] = None, device: str = "auto", checkpoint) -> dict:
    """Every configured run in this process on the checkpoint's weights and one seeded noise batch,
    timed round-robin by the shared harness; one record and trace per run. ``autotune``: the
    decisions file of the ``auto`` runs (``None``: kept in memory only)."""
    lam, sample = settings.logit_lambda, settings.sample
    torch_dev = torch_device(device)
    try:
        model, metadata = load_checkpoint(checkpoint)
    except CheckpointError as err:
        raise CheckpointError(f"made.per_dataset.{dataset}.checkpoint: {err}") from err
    check_checkpoint_fits(metadata, model, settings.hidden_sizes, lam, dataset, checkpoint)
    model.to(torch_dev)
    noise = logistic_noise(sample.batch, model.nin, seed_stream(seed, "made", dataset, "sample_noise"), torch_dev)
    image_shape = list(IMAGE_SHAPES[dataset])
    specs, autos = split_auto(settings.specs)
    runs = []
    for tol in dict.fromkeys(spec.stopping_tol(sample.tol) for spec in specs):  # frontier runs: own tol
        runs += candidates(
            model, noise, lam, [s for s in specs if s.stopping_tol(sample.tol) == tol], tol=tol,
            snapshots=snapshot_iterations(sample.snapshot_every, sample.snapshot_count), keep=sample.show,
            trace_extra={"image_shape": np.asarray(image_shape), "logit_lambda": np.asarray(lam)},
            extra={"hidden_sizes": model.hidden_sizes, "logit_lambda": lam, "checkpoint": str(checkpoint),
                   "image_shape": image_shape},
        )
    order = {spec.name: i for i, spec in enumerate(specs)}
    runs.sort(key=lambda c: order[c.name])
    # auto: the loop's first 2% of steps predict it; the parallel runs go first under deadlines.
    key = {"experiment": "made", "dataset": dataset, "shape": noise.shape, "dtype": noise.dtype,
           "device": noise.device, "hidden_sizes": model.hidden_sizes, "logit_lambda": lam,
           "tol": sample.tol}
    log.info("MADE %s on %s: %d dims, batch %d, on %s", model.hidden_sizes, dataset, model.nin,
             sample.batch, torch_dev)
    context = RunContext("made", dataset, seed, device_description(torch_dev), sample.batch, threads)
    return measure_and_write(runs, context, timing=timing, metrics=metrics, traces=traces,
                             auto_runs=autos, autotune=autotune,
                             baseline_pilot=sequential_pilot(model, noise, lam), key=key)


def measure_job(job: Job) -> dict:
    """The ``made_measure`` rule."""
    return measure(
        settings_from(MeasureSettings, job.params.settings, "made"),
        checkpoint=job.input.checkpoint,
        **measure_arguments(job),
        device=job.params.device,
    )
