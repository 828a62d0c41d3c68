"""DenseNet inference by Jacobi iteration over layers (reference §2.2): the train and measure jobs.

``train`` fits the small DenseNet-BC of the embedded default on MNIST. ``measure`` runs
every configured method on one dataset in **one process** through the shared harness
(:func:`ffsolve.kit.measure`): same weights, same inputs, timed repeats interleaved, the timed
output (the logits) checked against the reference, and writes one ``metrics.json`` +
``trace.npz`` per run.

The reference is the ``sequential`` run: the model's own forward pass
(:func:`~ffsolve.experiments.densenet.system.forward_candidate`), timed in the same session.

``jacobi_top5`` is timed to a stable top-5 (record field ``quantity: time_to_top5``): Jacobi that
stops inside its loop once every image's top-5 list has been unchanged for ``top5_patience``
steps, a rule that never sees the answer. Its accuracy is its top-5 match, not a logit
tolerance: its record has no ``tolerance`` (``within_tolerance`` null) and gives the stop step,
what stopped it (``stopped_by``: ``early_stop`` for the rule, ``fixed_point`` or
``exact_prefix`` when it ran to the end, then ``converged``), the time, and the fraction of
images whose top-5 (and top-1) at the stop equal the forward pass's (``top5_match_fraction``).

Each run also has a traced twin (the same computation with every iterate's logits recorded, run
once, untimed; the harness checks it gave the timed output and step count). From the traces come
the figure's curves and a *trace analysis*, never a timed result: ``stable_top1_iteration`` /
``stable_top5_iteration``, the step from which every image's list stays equal to the forward
pass's (an oracle's stopping point, the one the paper's 2.13x estimate used, with its
first-match rule).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ffsolve.data import load_prepared
from ffsolve.experiments.densenet import data as inputs
from ffsolve.experiments.densenet import stats
from ffsolve.experiments.densenet.model import (
    DenseNet,
    load_checkpoint,
    load_densenet201_pretrained,
    random_densenet201,
    save_checkpoint,
)
from ffsolve.experiments.densenet.system import BLOCKED, Problem, candidates, float32_everywhere
from ffsolve.kit import (
    AUTO,
    Job,
    RunContext,
    RunSpec,
    TimingSettings,
    device_description,
    expand_runs,
    measure_and_write,
    measure_arguments,
    progress,
    seed_stream,
    settings_from,
    torch_device,
    torch_generator,
    write_json,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSettings:
    """``densenet.model``: the small DenseNet-BC of the mnist dataset."""

    growth_rate: int
    block_config: tuple[int, ...]
    num_init_features: int
    bn_size: int
    compression: float
    stem_stride: int

    def kwargs(self) -> dict:
        return {"growth_rate": self.growth_rate, "block_config": tuple(self.block_config),
                "num_init_features": self.num_init_features, "bn_size": self.bn_size,
                "compression": self.compression, "stem_stride": self.stem_stride,
                "num_classes": 10, "in_channels": 1, "stem": "small"}


@dataclass(frozen=True)
class Training:
    """``densenet.train``: Adam with cosine decay over the MNIST training split."""

    epochs: int
    batch: int
    lr: float


@dataclass(frozen=True)
class TrainSettings:
    """What ``densenet_train`` reads: ``densenet.model`` and ``densenet.train``."""

    model: ModelSettings
    train: Training


@dataclass(frozen=True)
class MeasureSettings:
    """``densenet.*`` for one dataset (see config.schema.yaml beside this file)."""

    methods: tuple[str, ...]
    block_sizes: tuple[int, ...]
    images: int
    image_size: Optional[int]  # noqa: UP045 - settings_from reads typing.Optional
    weights_file: Optional[str]  # noqa: UP045
    download: bool
    top5_patience: int
    model: ModelSettings
    train: Training


def run_specs(settings: MeasureSettings) -> list[RunSpec]:
    return expand_runs(settings.methods, settings.block_sizes, blocked=BLOCKED)


# ------------------------------------------------------------------------------------------------
# Training (embedded default)
# ------------------------------------------------------------------------------------------------


def fit(model: DenseNet, images: torch.Tensor, labels: torch.Tensor, *, epochs: int,
        batch_size: int, learning_rate: float, generator: torch.Generator) -> list[float]:
    """Adam with a cosine learning-rate decay; returns the mean loss of each epoch."""
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


def train(settings: TrainSettings, *, seed: int, data: str, checkpoint: str, record: str,
          threads: int | None = None) -> dict:
    """Train the small DenseNet-BC on the prepared MNIST at ``data``; write the checkpoint and
    the training record (``record``)."""
    train_settings = settings.train
    prepared = load_prepared(data)
    kwargs = settings.model.kwargs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_stream(seed, "densenet", "mnist", "init"))
        model = DenseNet(**kwargs)
    train_x, train_y = inputs.mnist_tensor(prepared.train_images), torch.from_numpy(prepared.train_labels)
    test_x, test_y = inputs.mnist_tensor(prepared.test_images), torch.from_numpy(prepared.test_labels)
    start = time.perf_counter()
    losses = fit(model, train_x, train_y, epochs=train_settings.epochs,
                 batch_size=train_settings.batch, learning_rate=train_settings.lr,
                 generator=torch_generator(seed, "densenet", "mnist", "minibatches"))
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(model, test_x, test_y)
    log.info("test accuracy %.4f on %d images after %.1f s of training", test_accuracy,
             len(test_y), seconds)
    save_checkpoint(model, checkpoint, kwargs)
    summary = {
        "dataset": "mnist",
        "data_source": prepared.source,
        "train_images": len(train_y),
        "test_images": len(test_y),
        "test_accuracy": test_accuracy,
        "epoch_losses": losses,
        "train_seconds": seconds,
        "dense_layers": model.num_dense_layers,
        "parameters": sum(p.numel() for p in model.parameters()),
        "model": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
        "seed": seed,
        "threads": threads,
    }
    write_json(record, summary)
    return summary


# ------------------------------------------------------------------------------------------------
# The measurement
# ------------------------------------------------------------------------------------------------


def load_problem(settings: MeasureSettings, dataset: str, seed: int, *, model_path: str | None = None,
                 data: str | None = None, image_folder: str | None = None,
                 weights_dir: str = "resources/weights") -> Problem:
    """The model and input batches of ``dataset``."""
    if dataset == "mnist":
        prepared = load_prepared(data)
        count = min(settings.images, len(prepared.test_labels))
        batch = inputs.mnist_tensor(prepared.test_images[:count])
        return Problem(load_checkpoint(model_path), [batch], prepared.test_labels[:count],
                       "small DenseNet-BC trained on MNIST")
    if dataset == "imagenet_val":
        model = load_densenet201_pretrained(settings.weights_file, settings.download, weights_dir)
        batches, labels = inputs.imagenet_batches(
            image_folder, settings.images, seed_stream(seed, "densenet", dataset, "image_order"),
            settings.image_size,
        )
        return Problem(model, batches, labels, "DenseNet-201, torchvision ImageNet weights")
    if dataset == "random_speed_only":
        if settings.image_size is None:
            raise ValueError("densenet.per_dataset.random_speed_only.image_size must be set: the "
                             "size of the random inputs")
        model = random_densenet201(seed_stream(seed, "densenet", dataset, "weights"))
        batch = inputs.random_batch(settings.images, settings.image_size,
                                    seed_stream(seed, "densenet", dataset, "inputs"))
        return Problem(model, [batch], None, f"DenseNet-201 architecture, {inputs.SPEED_ONLY_LABEL}",
                       speed_only=True)
    raise ValueError(f"densenet dataset must be one of {list(inputs.DATASETS)}, got {dataset!r}")


def measure(settings: MeasureSettings, *, dataset: str, seed: int, timing: TimingSettings,
            metrics: Mapping[str, str], traces: Mapping[str, str], threads: int | None = None,
            autotune: str | None = None, device, problem: Problem) -> dict:
    """Every method in one process, timed round-robin; one record and trace per configured run.
    ``autotune``: the decisions file of the ``auto`` runs (``None``: kept in memory only)."""
    float32_everywhere()
    found, reference = candidates(problem, run_specs(settings), device, top5_patience=settings.top5_patience)
    # auto: the forward pass first, in full (its time the others' deadline). The batched steps
    # are only within the logit tolerance of it, so they answer an exact auto run only where
    # within-tolerance answers are allowed (timing.auto_allow_within_tolerance).
    key = {"experiment": "densenet", "dataset": dataset, "label": problem.description,
           "shapes": sorted({tuple(b.shape) for b in problem.batches}),
           "dtype": problem.batches[0].dtype, "device": device, "block_sizes": settings.block_sizes}
    log.info("%s: %s, %d batch(es) of %s", dataset, problem.description,
             len(problem.batches), tuple(problem.batches[0].shape))
    context = RunContext("densenet", dataset, seed, device_description(device),
                         problem.batches[0].shape[0], threads)
    return measure_and_write(found, context, timing=timing, metrics=metrics, traces=traces,
                             auto_runs=[spec for spec in run_specs(settings) if spec.method == AUTO],
                             autotune=autotune, key=key,
                             after=lambda measurements: score_top5(measurements, reference))


def score_top5(measurements: Mapping, reference: np.ndarray) -> None:
    """``jacobi_top5``'s agreement with the forward pass, scored after the clock stopped."""
    for m in measurements.values():
        if m.candidate.spec.method == "jacobi_top5":
            # Scored after the clock stopped: the timed output against the forward pass's.
            logits = m.result.x.cpu().numpy()
            top5 = stats.topk_agreement(logits, reference, 5)
            m.candidate.extra.update(
                stop_iteration=int(m.result.iterations),
                # converged: a step changed nothing, or the T-step bound; else the top-5 rule.
                stopped_by=(("exact_prefix" if m.result.iterations >= m.result.sequence_length
                             else "fixed_point") if m.result.converged else "early_stop"),
                top5_match_fraction=top5["ordered"], top5_set_match_fraction=top5["as_set"],
                top1_match_fraction=stats.topk_agreement(logits, reference, 1)["ordered"],
            )


def measure_job(job: Job) -> dict:
    """The ``densenet_measure`` rule."""
    settings = settings_from(MeasureSettings, job.params.settings, "densenet")
    dataset = job.wildcards.dataset
    problem = load_problem(
        settings, dataset, job.params.seed,
        model_path=getattr(job.input, "model", None), data=getattr(job.input, "data", None),
        image_folder=job.params.image_folder, weights_dir=job.params.weights_dir,
    )
    return measure(
        settings, problem=problem, **measure_arguments(job),
        device=torch_device(job.params.device),
    )


def train_job(job: Job) -> dict:
    """The ``densenet_train`` rule."""
    return train(settings_from(TrainSettings, {"model": job.params.model, "train": job.params.train}, "densenet"),
                 seed=job.params.seed, data=job.input.data, checkpoint=job.output.model,
                 record=job.output.summary, threads=job.threads)
