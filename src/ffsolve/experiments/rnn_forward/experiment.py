"""Long-sequence RNN evaluation (issue 12): train the MNIST GRU, then time every recurrence method.

:func:`train` fits :class:`~ffsolve.experiments.rnn_forward.model.NextPixelGRU` briefly to
predict each binarized MNIST pixel from the ones before it in raster order (T = 784; a loss at
every step), reports bits per pixel on test images against two network-free baselines, and writes
a checkpoint. :func:`measure` evaluates one
case (the trained GRU on a batch of test images, or a random GRU / softplus RNN at a given T and H)
with every configured run in one process, on the same weights and inputs, through the shared
harness (repeats interleaved, each timed output checked against the sequential loop), and writes
one record and trace per run. ``train_job`` and ``measure_job`` are the thin adapters the
``rnn_forward_train`` and ``rnn_forward_measure`` rules call; they read only params and paths.

Only the trained case and the training import torch; a ``*_jax`` case runs without it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ffsolve.data import load_prepared
from ffsolve.experiments.rnn_forward.cases import (
    Case,
    baseline_bits_per_pixel,
    parse_case,
    pixel_sequences,
    random_case_arrays,
)
from ffsolve.kit import (
    Job,
    RunContext,
    TimingSettings,
    device_description,
    measure_and_write,
    measure_arguments,
    progress,
    seed_stream,
    settings_from,
    write_json,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Training:
    """``rnn_forward.train``: Adam on the next-pixel binary cross-entropy at every step."""

    steps: int
    batch: int
    lr: float
    eval_every: int
    test_images: int


@dataclass(frozen=True)
class TrainSettings:
    """What ``rnn_forward_train`` reads."""

    hidden_size: int
    train: Training


@dataclass(frozen=True)
class MeasureSettings:
    """What ``rnn_forward_measure`` reads of one case's settings."""

    hidden_size: int
    methods: tuple[str, ...]
    frontier_tols: tuple[float, ...]
    batch: int
    input_size: int
    softplus_radius: float
    damping: float

    @property
    def runs(self) -> list[str]:
        from ffsolve.experiments.rnn_forward.cases import run_names

        return run_names(self.methods, self.frontier_tols)


# --------------------------------------------------------------------------- training


def fit(model, train_images: np.ndarray, test_images: np.ndarray, training: Training, *, seed: int,
        device="cpu") -> dict:
    """Adam on random batches of next-pixel sequences; returns the learning curve (bits per pixel)."""
    import torch

    from ffsolve.experiments.rnn_forward.model import bits_per_pixel

    model.to(device).train()
    batches = torch.Generator().manual_seed(seed_stream(seed, "rnn_forward", "mnist", "batches"))
    train_u, train_x = (torch.from_numpy(a) for a in pixel_sequences(train_images))
    test_u, test_x = (torch.from_numpy(a).to(device) for a in pixel_sequences(test_images))
    optimizer = torch.optim.Adam(model.parameters(), lr=training.lr)
    curve = {"step": [], "train_bits_per_pixel": [], "test_bits_per_pixel": []}
    running, seen, start = 0.0, 0, time.perf_counter()
    for step in progress(range(1, training.steps + 1), desc="GRU mnist", total=training.steps):
        index = torch.randint(0, train_u.shape[1], (training.batch,), generator=batches)
        logits = model(train_u[:, index].to(device))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, train_x[:, index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Long sequences: clip so an early exploding gradient cannot wreck a short training.
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"GRU training diverged at step {step} (loss {value}); lower rnn_forward.train.lr")
        running, seen = running + value / math.log(2.0), seen + 1
        if step % training.eval_every == 0 or step == training.steps:
            model.eval()
            with torch.no_grad():
                test_bits = bits_per_pixel(model(test_u), test_x)
            model.train()
            curve["step"].append(step)
            curve["train_bits_per_pixel"].append(running / seen)
            curve["test_bits_per_pixel"].append(test_bits)
            log.info("step %d: train %.4f bits/pixel (mean since last report), test %.4f bits/pixel",
                     step, running / seen, test_bits)
            running, seen = 0.0, 0
    model.eval()
    return {**curve, "train_time_s": time.perf_counter() - start}


def train(settings: TrainSettings, *, seed: int, data, checkpoint, record, device: str = "auto",
          threads: int | None = None) -> dict:
    """Fit the next-pixel GRU on the prepared MNIST at ``data``; write the checkpoint and the
    training record (its curve) to ``record``.

    The record holds the test bits per pixel at each report and, on the same test images, those
    of the constant and the per-position marginal predictors fitted to the training images
    (``baseline_bits_per_pixel``), so a reader sees whether the GRU learned anything."""
    from ffsolve.experiments.rnn_forward.model import NextPixelGRU, save_checkpoint
    from ffsolve.kit import seed_everything, torch_device

    prepared = load_prepared(data)
    if prepared.train_images.shape[1:] != (28, 28):
        raise ValueError(f"rnn_forward trains on 28x28 MNIST pixels, got images {prepared.train_images.shape[1:]}")
    seed_everything(seed_stream(seed, "rnn_forward", "mnist", "init"))
    model = NextPixelGRU(settings.hidden_size)
    test_images = prepared.test_images[: settings.train.test_images]
    baselines = baseline_bits_per_pixel(prepared.train_images, test_images)
    torch_dev = torch_device(device)
    log.info("GRU(%d) next-pixel on binarized mnist (%s, train %d / test %d) on %s; baselines %s",
             settings.hidden_size, prepared.source, len(prepared.train_images), len(test_images), torch_dev,
             {k: round(v, 4) for k, v in baselines.items()})
    curve = fit(model, prepared.train_images, test_images, settings.train, seed=seed, device=torch_dev)
    final = curve["test_bits_per_pixel"][-1]
    if final >= baselines["pixel_marginal"]:
        log.warning("the GRU (%.4f bits/pixel) does not beat the per-pixel marginal (%.4f) after %d steps",
                    final, baselines["pixel_marginal"], settings.train.steps)
    summary = {
        "experiment": "rnn_forward",
        "dataset": "mnist",
        "task": "next_pixel_binarized",
        "data_source": prepared.source,
        "cell": "gru",
        "hidden_size": settings.hidden_size,
        "sequence_length": 784,
        "steps": settings.train.steps,
        "batch_size": settings.train.batch,
        "lr": settings.train.lr,
        "final_test_bits_per_pixel": final,
        "baseline_bits_per_pixel": baselines,
        "test_images": len(test_images),
        "curve": curve,
        "device": device_description(torch_dev),
        "seed": seed,
        **({"threads": int(threads)} if threads else {}),
    }
    save_checkpoint(model.cpu(), checkpoint, {
        "final_test_bits_per_pixel": final,
        "pixel_marginal_bits_per_pixel": baselines["pixel_marginal"],
        **{k: summary[k] for k in ("data_source", "hidden_size", "steps", "seed")},
    })
    write_json(record, summary)
    return summary


def train_job(job: Job) -> dict:
    """The ``rnn_forward_train`` rule."""
    return train(
        settings_from(TrainSettings, job.params.settings, "rnn_forward"),
        seed=job.params.seed,
        data=job.input.dataset,
        checkpoint=job.output.checkpoint,
        record=job.output.metrics,
        device=job.params.device,
        threads=job.threads,
    )


# --------------------------------------------------------------------------- measuring


def case_arrays(case: Case, settings: MeasureSettings, *, seed: int, checkpoint=None, data_path=None):
    """``(cell weights, inputs (T, batch, D), extra record fields, model or None, targets or None)``."""
    if not case.trained:
        weights, inputs = random_case_arrays(case, batch=settings.batch, input_size=settings.input_size,
                                             seed=seed, radius=settings.softplus_radius)
        extra = {"input_size": settings.input_size, "weights": "random"}
        if case.cell == "softplus":
            extra["softplus_radius"] = settings.softplus_radius
        return weights, inputs, extra, None, None
    from ffsolve.experiments.rnn_forward.model import CheckpointError, load_checkpoint

    if checkpoint is None or data_path is None:
        raise ValueError("rnn_forward case 'mnist' needs the trained checkpoint and the prepared MNIST data")
    try:
        model, metadata = load_checkpoint(checkpoint, settings.hidden_size)
    except CheckpointError as err:
        raise CheckpointError(f"rnn_forward (mnist): {err}") from err
    data = load_prepared(data_path)
    images = data.test_images[: settings.batch]
    if len(images) < settings.batch:
        raise ValueError(f"rnn_forward.batch is {settings.batch} but mnist has only {len(images)} test images")
    inputs, targets = pixel_sequences(images)
    extra = {"input_size": 1, "weights": "trained", "task": "next_pixel_binarized", "checkpoint": str(checkpoint),
             "train_test_bits_per_pixel": metadata.get("final_test_bits_per_pixel")}
    return model.cell_weights(), inputs, extra, model, targets


def measure(settings: MeasureSettings, *, dataset: str, seed: int, timing: TimingSettings,
            metrics: Mapping[str, str], traces: Mapping[str, str], threads: int | None = None,
            autotune: str | None = None, device: str = "auto", checkpoint=None, data=None) -> dict:
    """Every configured run of one case (``dataset``: the case's name) in this process, timed
    round-robin; one record per run. ``autotune``: the decisions file of the ``auto`` runs
    (``None``: kept in memory only)."""
    case = dataset
    from ffsolve.experiments.rnn_forward.system import candidates, device_for
    from ffsolve.kit import auto_settings

    spec = parse_case(case, settings.hidden_size)
    weights, inputs, extra, model, targets = case_arrays(spec, settings, seed=seed, checkpoint=checkpoint,
                                                        data_path=data)
    dev = device_for(spec.framework, device)
    extra = {"cell": spec.cell, "hidden_size": spec.hidden, "framework": spec.framework, **extra}
    key = {"experiment": "rnn_forward", "dataset": case, "cell": spec.cell, "framework": spec.framework,
           "inputs": inputs.shape, "hidden_size": spec.hidden, "dtype": inputs.dtype, "device": dev,
           "damping": settings.damping}
    runs = candidates(spec, weights, inputs, settings.runs, damping=settings.damping, device=dev, extra=extra,
                      auto=auto_settings(timing, autotune), key=key)
    log.info("rnn_forward %s: %s cell, T %d, H %d, batch %d, %s on %s; runs %s", case, spec.cell,
             spec.length, spec.hidden, settings.batch, spec.framework, dev, [c.name for c in runs])

    def bits_per_pixel(measurements):
        """The trained GRU: its next-pixel loss on the batch from each run's states."""
        import torch

        target = torch.from_numpy(targets)
        bits = {name: model.bits_per_pixel(torch.as_tensor(_host(m.result.x)), target)
                for name, m in measurements.items()}
        for name, m in measurements.items():
            m.candidate.extra["bits_per_pixel"] = bits[name]
            m.candidate.extra["bits_per_pixel_minus_sequential"] = bits[name] - bits["sequential"]

    context = RunContext("rnn_forward", case, seed, device_description(dev), settings.batch, threads)
    return measure_and_write(runs, context, timing=timing, metrics=metrics, traces=traces,
                             after=None if model is None else bits_per_pixel)


def _host(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def measure_job(job: Job) -> dict:
    """The ``rnn_forward_measure`` (and ``rnn_forward_measure_jax``) rule."""
    return measure(
        settings_from(MeasureSettings, job.params.settings, "rnn_forward"),
        **measure_arguments(job),
        device=job.params.device,
        checkpoint=getattr(job.input, "checkpoint", None),
        data=getattr(job.input, "data", None),
    )
