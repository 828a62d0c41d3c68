"""Long-sequence RNN evaluation (issue 12): train the MNIST GRU, then time every recurrence method.

:func:`train_model` fits :class:`~ffsolve.experiments.rnn_forward.model.GRUClassifier` briefly on
MNIST pixels in raster order (T = 784) and writes a checkpoint. :func:`measure_case` evaluates one
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
    parse_case,
    pixel_sequences,
    random_case_arrays,
)
from ffsolve.jobs import Job, outputs_by_run, progress
from ffsolve.kit import (
    RunContext,
    measure,
    seed_stream,
    settings_from,
    write_json,
    write_runs,
)
from ffsolve.kit.harness import TimingSettings
from ffsolve.runtime import device_description

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Training:
    """``rnn_forward.train``: Adam on cross-entropy of the last state's logits."""

    steps: int
    batch_size: int
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


def fit(model, train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
        test_labels: np.ndarray, training: Training, *, seed: int, device="cpu") -> dict:
    """Adam on random batches of pixel sequences; returns the learning curve (test accuracy)."""
    import torch

    model.to(device).train()
    batches = torch.Generator().manual_seed(seed_stream(seed, "rnn_forward", "mnist", "batches"))
    train_x = torch.from_numpy(pixel_sequences(train_images))
    train_y = torch.from_numpy(train_labels.astype(np.int64))
    test_x = torch.from_numpy(pixel_sequences(test_images)).to(device)
    test_y = torch.from_numpy(test_labels.astype(np.int64)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=training.lr)
    curve = {"step": [], "train_loss": [], "test_accuracy": []}
    running, seen, start = 0.0, 0, time.perf_counter()
    for step in progress(range(1, training.steps + 1), desc="GRU mnist", total=training.steps):
        index = torch.randint(0, train_x.shape[1], (training.batch_size,), generator=batches)
        logits = model(train_x[:, index].to(device))
        loss = torch.nn.functional.cross_entropy(logits, train_y[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Long sequences: clip so an early exploding gradient cannot wreck a short training.
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"GRU training diverged at step {step} (loss {value}); lower rnn_forward.train.lr")
        running, seen = running + value, seen + 1
        if step % training.eval_every == 0 or step == training.steps:
            model.eval()
            with torch.no_grad():
                accuracy = float((model(test_x).argmax(-1) == test_y).float().mean())
            model.train()
            curve["step"].append(step)
            curve["train_loss"].append(running / seen)
            curve["test_accuracy"].append(accuracy)
            log.info("step %d: train loss %.4f (mean since last report), test accuracy %.3f",
                     step, running / seen, accuracy)
            running, seen = 0.0, 0
    model.eval()
    return {**curve, "train_time_s": time.perf_counter() - start}


def train_model(settings: TrainSettings, *, data_path, checkpoint_path, metrics_path, seed: int,
                device: str = "auto", threads: int | None = None) -> dict:
    """Fit the GRU classifier on the prepared MNIST at ``data_path``; write checkpoint and curve."""
    from ffsolve.experiments.rnn_forward.model import GRUClassifier, save_checkpoint
    from ffsolve.runtime import seed_everything, torch_device

    data = load_prepared(data_path)
    if data.train_images.shape[1:] != (28, 28):
        raise ValueError(f"rnn_forward trains on 28x28 MNIST pixels, got images {data.train_images.shape[1:]}")
    seed_everything(seed_stream(seed, "rnn_forward", "mnist", "init"))
    model = GRUClassifier(settings.hidden_size)
    torch_dev = torch_device(device)
    test = slice(0, settings.train.test_images)
    log.info("GRU(%d) on mnist pixels (%s, train %d / test %d) on %s", settings.hidden_size, data.source,
             len(data.train_images), len(data.test_images[test]), torch_dev)
    curve = fit(model, data.train_images, data.train_labels, data.test_images[test], data.test_labels[test],
                settings.train, seed=seed, device=torch_dev)
    record = {
        "experiment": "rnn_forward",
        "dataset": "mnist",
        "data_source": data.source,
        "cell": "gru",
        "hidden_size": settings.hidden_size,
        "sequence_length": 784,
        "steps": settings.train.steps,
        "batch_size": settings.train.batch_size,
        "lr": settings.train.lr,
        "final_test_accuracy": curve["test_accuracy"][-1],
        "test_images": len(data.test_images[test]),
        "curve": curve,
        "device": device_description(torch_dev),
        "seed": seed,
        **({"threads": int(threads)} if threads else {}),
    }
    save_checkpoint(model.cpu(), checkpoint_path, {
        k: record[k] for k in ("data_source", "hidden_size", "steps", "final_test_accuracy", "seed")
    })
    write_json(metrics_path, record)
    return record


def train_job(job: Job) -> dict:
    """The ``rnn_forward_train`` rule."""
    return train_model(
        settings_from(TrainSettings, job.params.settings, "rnn_forward"),
        data_path=job.input.dataset,
        checkpoint_path=job.output.checkpoint,
        metrics_path=job.output.metrics,
        seed=job.params.seed,
        device=job.params.device,
        threads=job.threads,
    )


# --------------------------------------------------------------------------- measuring


def case_arrays(case: Case, settings: MeasureSettings, *, seed: int, checkpoint=None, data_path=None):
    """``(cell weights, inputs (T, batch, D), extra record fields, classifier or None, labels or None)``."""
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
    images, labels = data.test_images[: settings.batch], data.test_labels[: settings.batch]
    if len(images) < settings.batch:
        raise ValueError(f"rnn_forward.batch is {settings.batch} but mnist has only {len(images)} test images")
    extra = {"input_size": 1, "weights": "trained", "checkpoint": str(checkpoint),
             "train_test_accuracy": metadata.get("final_test_accuracy")}
    return model.cell_weights(), pixel_sequences(images), extra, model, labels


def measure_case(settings: MeasureSettings, *, case: str, seed: int, timing: TimingSettings,
                 metrics: Mapping[str, str], traces: Mapping[str, str], device: str = "auto",
                 threads: int | None = None, checkpoint=None, data_path=None) -> dict:
    """Every configured run of one case in this process, timed round-robin; one record per run."""
    from ffsolve.experiments.rnn_forward.system import candidates, device_for

    spec = parse_case(case, settings.hidden_size)
    weights, inputs, extra, model, labels = case_arrays(spec, settings, seed=seed, checkpoint=checkpoint,
                                                        data_path=data_path)
    dev = device_for(spec.framework, device)
    extra = {"cell": spec.cell, "hidden_size": spec.hidden, "framework": spec.framework, **extra}
    runs = candidates(spec, weights, inputs, settings.runs, damping=settings.damping, device=dev, extra=extra)
    log.info("rnn_forward %s: %s cell, T %d, H %d, batch %d, %s on %s; runs %s", case, spec.cell,
             spec.length, spec.hidden, settings.batch, spec.framework, dev, [c.name for c in runs])
    measurements = measure(runs, repeats=timing.repeats, warmup=timing.warmup, min_sample_s=timing.min_sample_s)
    if model is not None:  # the trained GRU: what each run's last state classifies as
        import torch

        predicted = {name: model.classify(torch.as_tensor(_host(m.result.x)[-1])).numpy()
                     for name, m in measurements.items()}
        for name, m in measurements.items():
            m.candidate.extra["accuracy"] = float(np.mean(predicted[name] == labels))
            m.candidate.extra["agrees_with_sequential"] = float(np.mean(predicted[name] == predicted["sequential"]))
    context = RunContext("rnn_forward", case, seed, device_description(dev), settings.batch, threads)
    return write_runs(measurements, context, metrics, traces)


def _host(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def measure_job(job: Job) -> dict:
    """The ``rnn_forward_measure`` (and ``rnn_forward_measure_jax``) rule."""
    return measure_case(
        settings_from(MeasureSettings, job.params.settings, "rnn_forward"),
        case=job.wildcards.dataset,
        seed=job.params.seed,
        timing=settings_from(TimingSettings, job.params.timing, "timing"),
        metrics=outputs_by_run(job.params.runs, job.output.metrics),
        traces=outputs_by_run(job.params.runs, job.output.traces),
        device=job.params.device,
        threads=job.threads,
        checkpoint=getattr(job.input, "checkpoint", None),
        data_path=getattr(job.input, "data", None),
    )
