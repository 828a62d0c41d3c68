"""RNN backpropagation through time (paper §2.1): measure every backward method, train with each.

:func:`measure_runs` is the timed experiment: one vanilla RNN (the seeded initial weights) and one
batch of ``batch_size`` sequences; the timed program of every run is one backward pass, the solve
of the adjoint recursion (:mod:`.system`), and its output, the adjoints dloss/dh_t, is checked
against sequential BPTT's on the same weights and batch. All runs are timed in one process through
the shared harness, repeats interleaved; it writes every ``metrics.json``.

:func:`train_runs` draws the paper's figure: SGD with each backward method from the same seeded
weights and data order, recording loss and cumulative wall clock per step (the curves are not
speedup records), then the gradient error per parallel step at the start and the end of training.
Repeats are interleaved across methods; :func:`train_repeat` is one method's SGD loop, the unit to
time when every method's 200 steps are measured in one process.

Data: each image is resized to ``image_size``² (bilinear with antialiasing, as torchvision's
``Resize`` does for PIL images in the original), scaled to [0, 1] and read in raster order as a
sequence of T = ``image_size``² scalars.

``measure_job`` and ``train_job`` are the thin adapters the rules call; they read only the job's
params and paths, never the config.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

import ffsolve
from ffsolve.data import Dataset, load_prepared
from ffsolve.experiments.rnn_backprop import BLOCKED, BUDGETED
from ffsolve.experiments.rnn_backprop.model import (
    RNNParams,
    autograd_gradients,
    forward,
    gradients_from_adjoints,
    init_params,
    save_params,
)
from ffsolve.experiments.rnn_backprop.system import (
    SCANS,
    adjoint_system,
    backward,
    hillis_steele,
    scan_tolerance,
    solve_adjoints,
    traced_adjoints,
)
from ffsolve.jobs import Job, outputs_by_run, progress
from ffsolve.kit import Candidate, RunContext, RunSpec, expand_runs, measure, settings_from, write_runs
from ffsolve.kit.harness import TimingSettings
from ffsolve.kit.io import write_npz
from ffsolve.kit.seeds import torch_generator
from ffsolve.runtime import device_description, seed_everything, torch_device

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Settings:
    """``rnn_backprop.*`` for one dataset (see workflow/schemas/rnn_backprop.schema.yaml)."""

    methods: tuple[str, ...]
    block_sizes: tuple[int, ...]
    jacobi_budgets: tuple[int, ...]
    jacobi_tol: float
    image_size: Optional[int]
    hidden_size: int
    init_std: float
    batch_size: int
    dtype: str
    lr: float
    steps: int
    repeats: int
    ema_decay: float
    convergence_points: int


def runs(settings: Settings) -> list[RunSpec]:
    """Every run of the config: jacobi once per budget and once to the end (exact), the blocked
    methods once per block size, every other method once."""
    return expand_runs(settings.methods, settings.block_sizes, settings.jacobi_budgets,
                       blocked=BLOCKED, budgeted=BUDGETED)


# --------------------------------------------------------------------------------------- data


def dataset_sequences(dataset: Dataset, split: str, image_size: Optional[int]) -> torch.Tensor:
    """Images of ``split`` as float64 sequences ``(N, T)`` in [0, 1], T = image_size²."""
    images = torch.from_numpy(getattr(dataset, f"{split}_images")).to(torch.float64) / 255.0
    if images.ndim != 3:
        raise ValueError(
            f"rnn_backprop needs greyscale images (N, H, W); {dataset.name} has "
            f"{tuple(images.shape)}"
        )
    if image_size is not None and tuple(images.shape[1:]) != (image_size, image_size):
        # Bilinear with antialiasing: the tensor analogue of torchvision's Resize on PIL images.
        images = F.interpolate(images[:, None], size=(image_size, image_size), mode="bilinear",
                               antialias=True, align_corners=False)[:, 0].clamp_(0.0, 1.0)
    return images.reshape(images.shape[0], -1)


def batch_indices(count: int, steps: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """``(steps, batch)`` indices: shuffled epochs, each item once per epoch (batch 1 in the paper)."""
    needed = steps * batch
    epochs = [torch.randperm(count, generator=generator) for _ in range(math.ceil(needed / count))]
    return torch.cat(epochs)[:needed].reshape(steps, batch)


def time_major(rows: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` sequences -> the model's ``(T, B, 1)``."""
    return rows.T.unsqueeze(-1).contiguous()


def pick(count: int, points: int, seed: int, dataset: str, use: str) -> torch.Tensor:
    """``points`` distinct item indices for one named use (the measured batch, the probes)."""
    return torch.randperm(count, generator=torch_generator(seed, "rnn_backprop", dataset, use))[:points]


def initial_params(settings: Settings, seed: int, dataset: str, repeat: int, device=None,
                   dtype: Optional[torch.dtype] = None) -> RNNParams:
    """The initial weights of training repeat ``repeat`` (repeat 0's are the measured ones)."""
    generator = torch_generator(seed, "rnn_backprop", dataset, f"init_{repeat}")
    return init_params(settings.hidden_size, settings.init_std, generator,
                       dtype=dtype or DTYPES[settings.dtype], device=device)


def load_sequences(path: str, settings: Settings, device) -> tuple[str, torch.Tensor]:
    dataset = load_prepared(path)
    data = dataset_sequences(dataset, "train", settings.image_size)
    return dataset.name, data.to(device=device, dtype=DTYPES[settings.dtype])


# ------------------------------------------------------------------------------------ measure


def relative_error(a: RNNParams, b: RNNParams) -> float:
    """||a − b|| / ||b|| over all parameters at once (0 when both vanish)."""
    diff, ref = a.flat() - b.flat(), b.flat()
    norm = float(ref.norm())
    return float(diff.norm()) / norm if norm > 0 else float(diff.norm())


def candidates(settings: Settings, params: RNNParams, x: torch.Tensor) -> list[Candidate]:
    """One harness candidate per configured run, all on ``params`` and the batch ``x``.

    Each record also says how far the run's *gradients* are from PyTorch autograd's, both in
    float64 on the same weights and batch (``gradient_rel_error_vs_autograd``): the measure of
    how approximate a truncated budget is, free of float32 rounding.
    """
    cache = forward(params, x)
    system = adjoint_system(params, cache)
    specs = runs(settings)
    tolerance = scan_tolerance(system) if any(s.method in SCANS for s in specs) else None
    params64, x64 = params.to(dtype=torch.float64), x.to(torch.float64)
    cache64 = forward(params64, x64)
    reference, _ = autograd_gradients(params64, x64)
    out = []
    for spec in specs:
        rel = settings.jacobi_tol if spec.method == "jacobi_tol" else 0.0
        grads64 = backward(params64, cache64, spec, relative_tol=rel).grads
        extra = {
            "hidden_size": settings.hidden_size,
            "dtype": settings.dtype,
            "output": "adjoints dloss/dh_t, (T, batch, hidden), time order",
            "gradient_rel_error_vs_autograd": relative_error(grads64, reference),
        }
        if spec.method == "jacobi_tol":
            extra["relative_tol"] = settings.jacobi_tol
        out.append(Candidate(
            spec,
            lambda spec=spec, rel=rel: solve_adjoints(system, spec, relative_tol=rel),
            traced=lambda spec=spec, rel=rel: traced_adjoints(system, spec, relative_tol=rel),
            tolerance=tolerance if spec.method in SCANS else None,
            extra=extra,
        ))
    return out


def measure_runs(settings: Settings, *, data: str, dataset: str, seed: int, device: str,
                 timing: TimingSettings, metrics: Mapping[str, str], traces: Mapping[str, str],
                 threads: Optional[int] = None) -> dict:
    """Every backward method on the same weights and batch, in one process; one record per run."""
    seed_everything(seed)
    torch_dev = torch_device(device)
    _, sequences = load_sequences(data, settings, torch_dev)
    index = pick(sequences.shape[0], settings.batch_size, seed, dataset, "measure_batch")
    x = time_major(sequences[index.to(sequences.device)])
    params = initial_params(settings, seed, dataset, 0, device=torch_dev)
    log.info("%s: T = %d, batch %d, hidden %d, %s on %s; runs %s", dataset, x.shape[0], x.shape[1],
             settings.hidden_size, settings.dtype, torch_dev, [r.name for r in runs(settings)])
    measurements = measure(candidates(settings, params, x), repeats=timing.repeats,
                           warmup=timing.warmup, min_sample_s=timing.min_sample_s)
    context = RunContext("rnn_backprop", dataset, seed, device_description(torch_dev),
                         settings.batch_size, threads)
    return write_runs(measurements, context, metrics, traces)


# ----------------------------------------------------------------------------------- training


def sync_torch(value: torch.Tensor) -> torch.Tensor:
    """Wait for ``value``'s device (torch only: no JAX import inside a timed step)."""
    if value.is_cuda:
        torch.cuda.synchronize(value.device)
    return value


def train_repeat(params: RNNParams, data: torch.Tensor, order: torch.Tensor, spec: RunSpec,
                 settings: Settings, desc: str) -> dict[str, np.ndarray]:
    """SGD on ``params`` in place; per step: loss, EMA loss, cumulative seconds, parallel steps.

    The clock covers everything a step does (batch gather, sequential forward, backward by
    ``spec``, update, reading the loss back), as the original's did, minus its print.
    """
    steps = order.shape[0]
    rel = settings.jacobi_tol if spec.method == "jacobi_tol" else 0.0
    out = {key: np.zeros(steps) for key in ("loss", "ema_loss", "time_s")}
    out["iterations"] = np.zeros(steps, dtype=np.int64)
    ema, elapsed = None, 0.0
    for step in progress(range(steps), desc=desc):
        start = time.perf_counter()
        x = time_major(data[order[step]])
        cache = forward(params, x)
        result = backward(params, cache, spec, relative_tol=rel)
        params.sgd_step_(result.grads, settings.lr)
        loss = float(sync_torch(cache.loss))
        elapsed += time.perf_counter() - start
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"{desc}: loss became {loss} at step {step}; lower rnn_backprop.lr or init_std"
            )
        ema = loss if ema is None else settings.ema_decay * ema + (1 - settings.ema_decay) * loss
        out["loss"][step], out["ema_loss"][step], out["time_s"][step] = loss, ema, elapsed
        out["iterations"][step] = result.solve.iterations
    return out


def train_curves(settings: Settings, data: torch.Tensor, *, seed: int, dataset: str, warmup: int,
                 device=None) -> tuple[dict[str, dict[str, np.ndarray]], RNNParams]:
    """Every run's curves (``repeats`` × ``steps``), and sequential BPTT's weights after repeat 0.

    Each repeat starts every run from the same seeded weights and data order; within a repeat the
    runs go in an order rotated by one per repeat, so drift of the machine hits them alike.
    """
    specs = runs(settings)
    curves: dict[str, list] = {spec.name: [] for spec in specs}
    trained = None
    for repeat in range(settings.repeats):
        order_gen = torch_generator(seed, "rnn_backprop", dataset, f"order_{repeat}")
        order = batch_indices(data.shape[0], settings.steps, settings.batch_size, order_gen)
        order = order.to(data.device)
        shift = repeat % len(specs)
        for spec in specs[shift:] + specs[:shift]:
            params = initial_params(settings, seed, dataset, repeat, device=device)
            if warmup:  # throwaway steps: allocator and first-call costs stay off the clock
                train_repeat(params.clone(), data, order[:warmup], spec, settings,
                             desc=f"{spec.name} warm-up")
            curves[spec.name].append(train_repeat(
                params, data, order, spec, settings,
                desc=f"{spec.name} repeat {repeat + 1}/{settings.repeats}"))
            if repeat == 0 and spec.name == "sequential":
                trained = params
    stacked = {name: {key: np.stack([c[key] for c in runs_]) for key in runs_[0]}
               for name, runs_ in curves.items()}
    if trained is None:  # no sequential run configured: train its weights for the traces anyway
        trained = initial_params(settings, seed, dataset, 0, device=device)
        order_gen = torch_generator(seed, "rnn_backprop", dataset, "order_0")
        order = batch_indices(data.shape[0], settings.steps, settings.batch_size, order_gen)
        train_repeat(trained, data, order.to(data.device), RunSpec("sequential"), settings,
                     desc="sequential (for the convergence traces)")
    return stacked, trained


def per_example_errors(params: RNNParams, cache, iterates, exact: torch.Tensor) -> np.ndarray:
    """L2 error of every data point's gradients at each iterate of reversed adjoints, ``(iterates, points)``."""
    errors = []
    for u in iterates:
        grads = gradients_from_adjoints(params, cache, u.flip(0), per_example=True)
        errors.append((grads.flat(batch_dims=1) - exact).norm(dim=1))
    return torch.stack(errors).cpu().numpy()


def convergence_traces(params: RNNParams, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Gradient error per parallel step for BPTT, Jacobi and the Hillis–Steele scan (float64).

    Index k is "after k steps" (0: adjoints all zero). BPTT fixes one more adjoint per step;
    Jacobi updates all from the last iterate; the scan doubles its exact reach each step. Errors
    are against each point's exact gradient (sequential BPTT).
    """
    params, x = params.to(dtype=torch.float64), x.to(torch.float64)
    cache = forward(params, x)
    system = adjoint_system(params, cache)
    exact = gradients_from_adjoints(params, cache, solve_adjoints(system, RunSpec("sequential")).x,
                                    per_example=True).flat(batch_dims=1)
    zeros = torch.zeros_like(system.c)
    out = {}
    for method in ("sequential", "jacobi"):
        res = ffsolve.solve(system, zeros, method=method, tol=0.0, trace=True)
        iterates = torch.from_numpy(res.trace.iterates).to(x.device)
        out[method] = per_example_errors(params, cache, iterates, exact)
    steps = [zeros]
    hillis_steele(system, on_step=lambda c: steps.append(c.clone()))
    out["scan_hillis_steele"] = per_example_errors(params, cache, steps, exact)
    return out


def train_runs(settings: Settings, *, data: str, dataset: str, seed: int, device: str,
               warmup: int, training: Mapping[str, str], weights: str, convergence: str) -> None:
    """Training curves per run, the weights after sequential training, and the convergence traces
    at the initial weights (``begin``) and at those (``end``)."""
    seed_everything(seed)
    torch_dev = torch_device(device)
    _, sequences = load_sequences(data, settings, torch_dev)
    curves, trained = train_curves(settings, sequences, seed=seed, dataset=dataset, warmup=warmup,
                                   device=torch_dev)
    for name, path in training.items():
        write_npz(path, {**curves[name], "steps": settings.steps, "repeats": settings.repeats,
                         "lr": settings.lr, "hidden_size": settings.hidden_size,
                         "sequence_length": sequences.shape[1]})
        log.info("%s: final EMA loss %.4g (mean over %d repeats), %.3g s per step (median)", name,
                 curves[name]["ema_loss"][:, -1].mean(), settings.repeats,
                 np.median(np.diff(curves[name]["time_s"], axis=1, prepend=0.0)))
    save_params(trained, weights)
    probe = time_major(sequences[pick(sequences.shape[0], settings.convergence_points, seed,
                                      dataset, "probe").to(sequences.device)])
    arrays = {}
    phases = {"begin": initial_params(settings, seed, dataset, 0, device=torch_dev), "end": trained}
    for phase, params in phases.items():
        for method, errors in convergence_traces(params, probe).items():
            arrays[f"{phase}_{method}"] = errors
    write_npz(convergence, {"sequence_length": probe.shape[0], **arrays})


# ----------------------------------------------------------------------------------- the jobs


def measure_job(job: Job) -> dict:
    """The ``rnn_backprop_measure`` rule."""
    return measure_runs(
        settings_from(Settings, job.params.settings, "rnn_backprop"),
        data=job.input.dataset,
        dataset=job.wildcards.dataset,
        seed=job.params.seed,
        device=job.params.device,
        timing=settings_from(TimingSettings, job.params.timing, "timing"),
        metrics=outputs_by_run(job.params.runs, job.output.metrics),
        traces=outputs_by_run(job.params.runs, job.output.traces),
        threads=job.threads,
    )


def train_job(job: Job) -> None:
    """The ``rnn_backprop_train`` rule."""
    train_runs(
        settings_from(Settings, job.params.settings, "rnn_backprop"),
        data=job.input.dataset,
        dataset=job.wildcards.dataset,
        seed=job.params.seed,
        device=job.params.device,
        warmup=settings_from(TimingSettings, job.params.timing, "timing").warmup,
        training=outputs_by_run(job.params.runs, job.output.training),
        weights=job.output.weights,
        convergence=job.output.convergence,
    )
