"""RNN backpropagation through time (paper §2.1): train with every backward method, timed.

The paper's quantity is wall-clock to train: ``steps`` (200) SGD steps of a vanilla RNN, batch 1,
from the same initial weights and data order for every backward method, with the EMA loss
against cumulative time. :func:`measure` times exactly that, every run in one process
through the shared harness (:func:`ffsolve.kit.measure`), repeats interleaved round-robin. The
timed program of a run is the whole training loop (batch gather, sequential forward pass,
backward by the run's method, SGD update, reading the loss back, as the original did minus its
print); its output, the trained weights, is what the harness checks against sequential BPTT's:

* exact methods (BPTT, Jacobi to the end, a budget at least the steps Jacobi needs, the blocked
  methods) compute bit-for-bit BPTT's adjoints at every step, so their trained weights equal
  BPTT's bit for bit;
* the scans reassociate the adjoint sums, so their weights drift by rounding; they are held to
  :func:`training_tolerance` (twice BPTT's own float32 training error against the same
  training in float64, stated in each record);
* truncated Jacobi budgets and Jacobi to a tolerance are inexact by design: their records give
  the final EMA loss and its gap to BPTT's.

What stopped a run (``stopped_by``) is what stopped its backward passes: ``sequential`` for BPTT,
``exact_prefix`` for the scans (their log-depth step count), else each pass's own stop, the run
taking the least exact one any pass had (``budget`` before ``tolerance`` before ``exact_prefix``
before ``fixed_point``); ``backward_stopped_by`` counts the passes by their stop.

Each record has ``"quantity": "train_<steps>_steps"``, its final loss, and ``time_to_target_s``:
the time (median over the timed repeats) at which the run's EMA loss first reaches sequential
BPTT's final EMA loss (null if never). The loss curves of the figure (``trace.npz``) are those of
the timed calls themselves: the losses of the (deterministic) program and each timed repeat's
cumulative clock per step.

:func:`candidates` keeps the other quantity, ``solve``: one backward pass per run on one batch
(the adjoints checked against BPTT's); ``benchmarks/rnn_backprop_benchmark.py --solve`` times it.

Data: each image is resized to ``image_size``² (bilinear with antialiasing, as torchvision's
``Resize`` does for PIL images in the original), scaled to [0, 1] and read in raster order as a
sequence of T = ``image_size``² scalars.

``measure_job`` and ``convergence_job`` are the thin adapters the rules call; they read only the
job's params and paths, never the config.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

import ffsolve
from ffsolve.kit import (
    AutoSettings,
    Candidate,
    Job,
    RunContext,
    RunSpec,
    TimingSettings,
    Tolerance,
    auto_candidate,
    auto_settings,
    device_description,
    expand_runs,
    loop_pilot,
    measure_and_write,
    measure_arguments,
    passed,
    pilot_steps,
    seed_everything,
    settings_from,
    split_auto,
    stop_reason,
    torch_device,
    torch_generator,
    write_npz,
)
from ffsolve.data import Dataset, load_prepared
from ffsolve.experiments.rnn_backprop.layout import BLOCKED, BUDGETED
from ffsolve.experiments.rnn_backprop.model import (
    PARAM_NAMES,
    RNNParams,
    autograd_gradients,
    forward,
    gradients_from_adjoints,
    init_params,
    load_checkpoint,
    save_checkpoint,
)
from ffsolve.experiments.rnn_backprop.system import (
    SCANS,
    adjoint_system,
    candidates,
    backward,
    hillis_steele,
    solve_adjoints,
)
from ffsolve import SolveResult

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# A training run's stop is the least exact stop of any of its backward passes.
STOP_PRECEDENCE = ("deadline", "budget", "early_stop", "tolerance", "exact_prefix", "fixed_point",
                   "sequential")


@dataclass(frozen=True)
class MeasureSettings:
    """``rnn_backprop.*`` for one dataset (see config.schema.yaml beside this file)."""

    methods: tuple[str, ...]
    block_sizes: tuple[int, ...]
    jacobi_budgets: tuple[int, ...]
    jacobi_tol: float
    # typing.Optional, not `int | None`: settings_from checks Optional's type, not a UnionType's.
    image_size: Optional[int]  # noqa: UP045
    hidden_size: int
    init_std: float
    batch: int
    dtype: str
    lr: float
    steps: int
    repeats: int
    warmup_steps: int
    ema_decay: float
    convergence_points: int


def runs(settings: MeasureSettings) -> list[RunSpec]:
    """Every run of the config: jacobi once per budget and once to the end (exact), the blocked
    methods once per block size, every other method once (``auto`` apart: :func:`auto_runs`)."""
    return split_auto(expand_runs(settings.methods, settings.block_sizes, settings.jacobi_budgets,
                                  blocked=BLOCKED, budgeted=BUDGETED))[0]


def auto_runs(settings: MeasureSettings) -> list[RunSpec]:
    """The ``auto`` run, if configured: it trains with the method a pilot finds fastest."""
    return split_auto(expand_runs(settings.methods, settings.block_sizes, settings.jacobi_budgets,
                                  blocked=BLOCKED, budgeted=BUDGETED))[1]


def with_auto(settings: MeasureSettings, cands: list[Candidate], params: RNNParams, data: torch.Tensor,
              order: torch.Tensor, make_candidates: Callable[[], tuple[list[Candidate], dict]],
              auto: AutoSettings | None = None, key: Mapping | None = None):
    """``cands`` plus the ``auto`` run (kit.auto) over a fresh set of the same candidates (so its
    calls add nothing to the other runs' curves), and a function that, after timing, gives the
    curves of auto's chosen run (its timed calls) as auto's own.

    BPTT is the reference and the baseline: its first 2% of the steps, scaled by steps / k,
    predict it when its output is known; here the pool is fresh, so the first call trains with
    BPTT first, in full, and every other run that may answer is cut at the best time so far
    (between SGD steps). ``jacobi_tol`` stops at a relative tolerance, so it never answers the
    exact run; the scans are only within a tolerance of BPTT, so they answer only where allowed.
    The harness has no warm-up round here: it calls auto's ``prepare`` (the first call) before
    timing, and then once per repeat."""
    autos = auto_runs(settings)
    if not autos:
        return cands, lambda logs: None
    pool, pool_logs = make_candidates()
    steps = order.shape[0]
    pilot = loop_pilot(lambda k: train_run(params, data, order[:k], RunSpec("sequential"), settings)[0],
                       pilot_steps(steps), steps)
    kwargs = {} if auto is None else auto.kwargs()
    added = [auto_candidate(pool, run=spec, baseline_pilot=pilot, inexact=("jacobi_tol",), sync=lambda x: x,
                            key=key, **kwargs) for spec in autos]
    autos_by_name = {c.name: c for c in added}
    for candidate in added:
        first_call = candidate.prepare

        def prepare(first_call=first_call):
            first_call()
            for sink in pool_logs.values():  # the pilot's curves are not the timed calls'
                sink.clear()

        candidate.prepare = prepare

    def curves(logs: dict) -> None:
        for name, candidate in autos_by_name.items():
            logs[name] = pool_logs[candidate.extra["auto"]["chosen"]]

    return cands + added, curves


def quantity(settings: MeasureSettings) -> str:
    """The record's ``quantity``: what one timed call computes (``train_200_steps``)."""
    return f"train_{settings.steps}_steps"


# --------------------------------------------------------------------------------------- data


def dataset_sequences(dataset: Dataset, split: str, image_size: int | None) -> torch.Tensor:
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


def initial_params(settings: MeasureSettings, seed: int, dataset: str, repeat: int, device=None,
                   dtype: torch.dtype | None = None) -> RNNParams:
    """Seeded initial weights; stream ``repeat`` 0 is the one every run trains from."""
    generator = torch_generator(seed, "rnn_backprop", dataset, f"init_{repeat}")
    return init_params(settings.hidden_size, settings.init_std, generator,
                       dtype=dtype or DTYPES[settings.dtype], device=device)


def load_sequences(path: str, settings: MeasureSettings, device) -> tuple[str, torch.Tensor]:
    dataset = load_prepared(path)
    data = dataset_sequences(dataset, "train", settings.image_size)
    return dataset.name, data.to(device=device, dtype=DTYPES[settings.dtype])


# ------------------------------------------------------------------------- one backward pass


def relative_error(a: RNNParams, b: RNNParams) -> float:
    """||a − b|| / ||b|| over all parameters at once (0 when both vanish)."""
    diff, ref = a.flat() - b.flat(), b.flat()
    norm = float(ref.norm())
    return float(diff.norm()) / norm if norm > 0 else float(diff.norm())


def autograd_errors(settings: MeasureSettings, params: RNNParams, x: torch.Tensor) -> dict[str, float]:
    """Per run, the relative distance of its gradients from PyTorch autograd's, both in float64
    on ``params`` and the batch ``x``: how approximate a truncated budget is, free of float32
    rounding."""
    params64, x64 = params.to(dtype=torch.float64), x.to(torch.float64)
    cache64 = forward(params64, x64)
    reference, _ = autograd_gradients(params64, x64)
    out = {}
    for spec in runs(settings):
        rel = settings.jacobi_tol if spec.method == "jacobi_tol" else 0.0
        out[spec.name] = relative_error(backward(params64, cache64, spec, relative_tol=rel).grads,
                                        reference)
    return out


def solve_candidates(settings: MeasureSettings, params: RNNParams, x: torch.Tensor) -> list[Candidate]:
    """The configured runs of the quantity ``solve`` (:func:`~ffsolve.experiments.rnn_backprop.system.candidates`:
    one backward pass on ``params`` and the batch ``x``), each with its gradients' distance from
    autograd's."""
    return candidates(params, x, runs(settings), jacobi_tol=settings.jacobi_tol,
                      errors=autograd_errors(settings, params, x),
                      extra={"hidden_size": settings.hidden_size, "dtype": settings.dtype})


# ----------------------------------------------------------------------------------- training


def sync_torch(value: torch.Tensor) -> torch.Tensor:
    """Wait for ``value``'s device (torch only: no JAX import inside a timed step)."""
    if value.is_cuda:
        torch.cuda.synchronize(value.device)
    return value


def training_order(settings: MeasureSettings, count: int, seed: int, dataset: str, device=None) -> torch.Tensor:
    """``(steps, batch)`` item indices: the data order every run trains on (seeded)."""
    generator = torch_generator(seed, "rnn_backprop", dataset, "order_0")
    return batch_indices(count, settings.steps, settings.batch, generator).to(device)


def train_run(params: RNNParams, data: torch.Tensor, order: torch.Tensor, spec: RunSpec,
          settings: MeasureSettings, clock: Callable[[], float] = time.perf_counter,
          deadline: float | None = None) -> tuple[SolveResult, dict[str, np.ndarray]]:
    """SGD from a copy of ``params`` over the batches ``order`` with the backward method ``spec``.

    Returns a :class:`SolveResult` whose ``x`` is the trained weights (a dict of the five tensors:
    the output the harness checks) and, per step, the loss, the cumulative seconds since the
    start, and the backward pass's parallel steps and work. ``iterations`` is the most parallel
    steps one backward pass took (at most T − 1, the bound the harness checks),
    ``network_evaluations`` the mean adjoint-map passes per backward pass, and ``converged``
    says whether every backward pass met its stopping rule (False as soon as a budget cut one).
    A non-finite loss stops the run with advice. The curves include each backward pass's stop
    (``stopped_by``, a reason of :data:`ffsolve.kit.record.STOP_REASONS`). ``deadline`` (a
    ``time.perf_counter()`` value or an ``ffsolve.Deadline``; ``auto``'s pilot) stops the training
    between SGD steps: the result then says ``stopped_by="deadline"`` and has not converged.
    """
    params = params.clone()
    steps = order.shape[0]
    rel = settings.jacobi_tol if spec.method == "jacobi_tol" else 0.0
    loss = np.zeros(steps)
    seconds = np.zeros(steps)
    iterations = np.zeros(steps, dtype=np.int64)
    work = np.zeros(steps)
    stops = []
    converged = True
    start = clock()
    for step in range(steps):
        x = time_major(data[order[step]])
        cache = forward(params, x)
        result = backward(params, cache, spec, relative_tol=rel)
        params.sgd_step_(result.grads, settings.lr)
        value = float(sync_torch(cache.loss))
        seconds[step] = clock() - start
        if not math.isfinite(value):
            raise FloatingPointError(
                f"run {spec.name}: loss became {value} at step {step}; lower rnn_backprop.lr or "
                "rnn_backprop.init_std"
            )
        loss[step] = value
        iterations[step] = result.solve.iterations
        work[step] = result.solve.network_evaluations
        stops.append("exact_prefix" if spec.method in SCANS else stop_reason(result.solve, spec))
        converged = converged and bool(result.solve.converged)
        if step + 1 < steps and passed(deadline, (step + 1) / steps):
            cut = step + 1
            loss, seconds, iterations, work = loss[:cut], seconds[:cut], iterations[:cut], work[:cut]
            converged = False
            break
    solve = SolveResult(
        x={name: getattr(params, name) for name in PARAM_NAMES},
        iterations=int(iterations.max(initial=0)), converged=converged, method=spec.method,
        block_size=spec.block_size, tol=rel, sequence_length=data.shape[1],
        network_evaluations=float(work.mean()) if len(work) else 0.0,
        stopped_by="deadline" if len(loss) < steps else None,
    )
    return solve, {"loss": loss, "time_s": seconds, "backward_iterations": iterations,
                   "backward_network_evaluations": work, "stopped_by": np.asarray(stops, dtype=str)}


def training_stop(stops: np.ndarray) -> dict:
    """``stopped_by`` of a training run (the least exact stop of its backward passes, by
    :data:`STOP_PRECEDENCE`) and ``backward_stopped_by``: the passes counted by their stop."""
    reasons, counts = np.unique(np.asarray(stops, dtype=str), return_counts=True)
    found = {str(r): int(n) for r, n in zip(reasons, counts)}
    if not found:
        return {}
    return {"stopped_by": next(r for r in STOP_PRECEDENCE if r in found), "backward_stopped_by": found}


def params_of(result: SolveResult) -> RNNParams:
    """The trained weights of a :func:`train` result as :class:`RNNParams`."""
    return RNNParams(*(result.x[name] for name in PARAM_NAMES))


def ema(values: np.ndarray, decay: float) -> np.ndarray:
    """The original's exponential moving average, started at the first value."""
    out = np.empty_like(values, dtype=np.float64)
    current = None
    for i, value in enumerate(values):
        current = value if current is None else decay * current + (1 - decay) * value
        out[i] = current
    return out


TRAINING_FACTOR = 2.0  # a scan's training assumed no farther from the exact one than BPTT's


def training_tolerance(settings: MeasureSettings, params: RNNParams, data: torch.Tensor, order: torch.Tensor,
                       reference: RNNParams | None = None, factor: float = TRAINING_FACTOR) -> Tolerance:
    """How far a scan's trained weights may drift from BPTT's: BPTT's own float32 error, measured.

    BPTT trains once in float32 (``reference``, when the caller has it: BPTT's trained weights
    from ``params`` over the batches ``order`` of ``data``) and once in float64 from the same
    weights over the same batches; e = max |w_BPTT32 − w_BPTT64| is float32 training's own error
    (mostly the rounding of each weight at each SGD update). A scan's training rounds the same
    updates; assuming it no farther from the exact training than BPTT's (only the adjoints' last
    bits differ), the triangle inequality gives

        |w_scan − w_BPTT| <= |w_scan − w_exact| + |w_BPTT − w_exact| <= 2 e   elementwise.

    e is floored at one rounding of the largest weight (u · max|w|). For a float64 training, the
    float32 error of the same training is scaled by the units' ratio (2^-29). Costs one training
    of BPTT in float64 (and one in float32 without ``reference``).
    """
    unit32 = torch.finfo(torch.float32).eps / 2
    unit = torch.finfo(DTYPES[settings.dtype]).eps / 2
    low = dataclasses.replace(settings, dtype="float32")
    high = dataclasses.replace(settings, dtype="float64")
    spec = RunSpec("sequential")
    if reference is None or settings.dtype != "float32":
        reference = params_of(train_run(params.to(dtype=torch.float32), data.to(torch.float32), order,
                                    spec, low)[0])
    exact = params_of(train_run(params.to(dtype=torch.float64), data.to(torch.float64), order, spec,
                            high)[0])
    error = float((reference.flat().to(torch.float64) - exact.flat()).abs().max())
    floor = unit32 * float(exact.flat().abs().max())
    atol = factor * max(error, floor) * (unit / unit32)
    why = (
        "the scans reassociate the adjoint sums, so each step's gradients differ from BPTT's by "
        "rounding and the weights drift. Derived from BPTT's own float32 training error against "
        "the same training in float64 (same initial weights, batches and steps): e = "
        f"max|w_BPTT32 - w_BPTT64| = {error:.3g} (floored at u32·max|w| = {floor:.3g}), times "
        f"{factor:g}: a scan's training assumed no farther from the exact one than BPTT's, plus "
        f"BPTT's own e (triangle inequality); steps={order.shape[0]}, lr={settings.lr:g}, "
        f"{settings.dtype}" + ("" if settings.dtype == "float32"
                               else f", e scaled by u/u32 = {unit / unit32:.3g}")
    )
    return Tolerance(atol=atol, rtol=0.0, why=why)


def first_reach(curve: np.ndarray, target: float) -> int | None:
    """Index of the first step whose value is <= ``target``, or None."""
    hits = np.flatnonzero(curve <= target)
    return int(hits[0]) if hits.size else None


def training_candidates(settings: MeasureSettings, params: RNNParams, data: torch.Tensor,
                        order: torch.Tensor, *, scan_tol: Tolerance | None,
                        errors: Mapping[str, float]) -> tuple[list[Candidate], dict[str, list]]:
    """One harness candidate per run: its whole training is the timed program. Each timed call
    appends its per-step curves to the returned logs (the figure's curves come from there)."""
    logs: dict[str, list] = {}
    out = []
    for spec in runs(settings):
        logs[spec.name] = []

        def program(spec=spec, sink=logs[spec.name], deadline=None):
            # deadline: auto's pilot stops a losing run between SGD steps (its curves not kept)
            result, curves = train_run(params, data, order, spec, settings, deadline=deadline)
            if result.stopped_by != "deadline":
                sink.append(curves)
            return result

        extra = {
            "quantity": quantity(settings),
            "steps": settings.steps,
            # timing.warmup is 0 in the record: the warm-up is these untimed steps per run instead
            "warmup_steps": settings.warmup_steps,
            "lr": settings.lr,
            "hidden_size": settings.hidden_size,
            "dtype": settings.dtype,
            "output": f"trained weights (W_h, W_x, b_h, W_o, b_o) after {settings.steps} SGD steps",
            "iterations_meaning": "the most parallel steps one backward pass took over the training",
            "network_evaluations_meaning": "adjoint-map passes per backward pass, mean over the training",
            "gradient_rel_error_vs_autograd": errors[spec.name],
        }
        if spec.method == "jacobi_tol":
            extra["relative_tol"] = settings.jacobi_tol
        out.append(Candidate(spec, program, tolerance=scan_tol if spec.method in SCANS else None,
                             extra=extra))
    return out, logs


def measure(settings: MeasureSettings, *, dataset: str, seed: int, timing: TimingSettings,
            metrics: Mapping[str, str], traces: Mapping[str, str], threads: int | None = None,
            autotune: str | None = None, device: str, data: str, weights: str) -> dict:
    """Every run's training timed in one process; one record and one ``trace.npz`` (the curves)
    per run, and BPTT's trained weights (``weights``, for :func:`convergence_runs`).

    Before timing: BPTT trains once untimed (its weights give the scans' tolerance, and the
    timed BPTT must reproduce them bit for bit), and every other run trains ``warmup_steps``
    steps (allocator and first-call costs off the clock). Then ``repeats`` interleaved rounds,
    each run once per round from the same weights and data order. ``timing``: the job's timing
    settings, read for ``auto`` only (the timed repeats are ``rnn_backprop.repeats``).
    """
    seed_everything(seed)
    torch_dev = torch_device(device)
    _, sequences = load_sequences(data, settings, torch_dev)
    params = initial_params(settings, seed, dataset, 0, device=torch_dev)
    order = training_order(settings, sequences.shape[0], seed, dataset, device=sequences.device)
    specs = runs(settings)
    if "sequential" not in [spec.name for spec in specs]:
        raise ValueError("rnn_backprop.methods must include 'sequential' (BPTT, the reference run)")
    log.info("%s: T = %d, batch %d, hidden %d, %s on %s; %d SGD steps per run, %d timed repeats; "
             "runs %s", dataset, sequences.shape[1], settings.batch, settings.hidden_size,
             settings.dtype, torch_dev, settings.steps, settings.repeats, [s.name for s in specs])

    reference, _ = train_run(params, sequences, order, RunSpec("sequential"), settings)
    first_batch = time_major(sequences[order[0]])
    scan_tol = None
    if any(spec.method in SCANS for spec in specs):
        scan_tol = training_tolerance(settings, params, sequences, order, params_of(reference))
    errors = autograd_errors(settings, params, first_batch)
    cands, logs = training_candidates(settings, params, sequences, order, scan_tol=scan_tol,
                                      errors=errors)
    key = {"experiment": "rnn_backprop", "dataset": dataset, "data": sequences.shape,
           "order": order.shape, "hidden_size": settings.hidden_size, "dtype": settings.dtype,
           "device": torch_dev, "lr": settings.lr, "jacobi_tol": settings.jacobi_tol}
    cands, auto_curves = with_auto(settings, cands, params, sequences, order, lambda: training_candidates(
        settings, params, sequences, order, scan_tol=scan_tol, errors=errors),
        auto=auto_settings(timing, autotune), key=key)
    for spec in specs:
        if spec.name != "sequential" and settings.warmup_steps:
            train_run(params, sequences, order[:settings.warmup_steps], spec, settings)

    def after(measurements):
        """Auto's curves, the determinism checks and each run's training scores, after timing."""
        auto_curves(logs)

        timed = measurements["sequential"].result
        if not all(torch.equal(timed.x[name], reference.x[name]) for name in PARAM_NAMES):
            raise RuntimeError("the timed BPTT training did not reproduce the untimed one bit for bit: "
                               "training is not deterministic here, so the records would not hold")
        final = {}
        for name, calls in logs.items():
            losses = calls[0]["loss"]
            if any(not np.array_equal(c["loss"], losses) for c in calls[1:]):
                raise RuntimeError(f"run {name!r}: the timed repeats' losses differ (not deterministic)")
            final[name] = ema(losses, settings.ema_decay)
        target = float(final["sequential"][-1])
        for name, m in measurements.items():
            calls, curve = logs[name], final[name]
            seconds = np.stack([c["time_s"] for c in calls])
            reach = first_reach(curve, target)
            m.candidate.extra.update({
                "final_loss": float(calls[0]["loss"][-1]),
                "final_ema_loss": float(curve[-1]),
                "final_ema_loss_gap": float(curve[-1] - target),
                "target_ema_loss": target,
                "target_step": None if reach is None else reach + 1,
                "time_to_target_s": None if reach is None else float(np.median(seconds[:, reach])),
                "backward_iterations_mean": float(calls[0]["backward_iterations"].mean()),
                **training_stop(calls[0]["stopped_by"]),
            })
            measurements[name] = dataclasses.replace(m, trace={
                "loss": calls[0]["loss"], "ema_loss": curve, "time_s": seconds,
                "backward_iterations": calls[0]["backward_iterations"],
                "backward_network_evaluations": calls[0]["backward_network_evaluations"],
                "steps": settings.steps, "lr": settings.lr, "ema_decay": settings.ema_decay,
                "hidden_size": settings.hidden_size, "sequence_length": sequences.shape[1],
            })
            extra = m.candidate.extra
            log.info("%s: %.4g s for %d steps (median), final EMA loss %.5g (gap %.3g), target reached "
                     "%s", name, m.timing.median_s, settings.steps, extra["final_ema_loss"],
                     extra["final_ema_loss_gap"],
                     "never" if reach is None else f"at step {reach + 1}, {extra['time_to_target_s']:.4g} s")

    context = RunContext("rnn_backprop", dataset, seed, device_description(torch_dev),
                         settings.batch, threads)
    # No warm-up rounds: every run but BPTT trained warmup_steps steps above.
    records = measure_and_write(cands, context, timing=TimingSettings(repeats=settings.repeats, warmup=0),
                                metrics=metrics, traces=traces, after=after)

    save_checkpoint(params_of(reference), weights)
    return records


def convergence_runs(settings: MeasureSettings, *, data: str, dataset: str, seed: int, device: str,
                     weights: str, convergence: str) -> None:
    """The gradient error per parallel step (untimed, float64) on ``convergence_points`` probe
    sequences, at the initial weights (``begin``) and at BPTT's trained weights (``end``)."""
    seed_everything(seed)
    torch_dev = torch_device(device)
    _, sequences = load_sequences(data, settings, torch_dev)
    probe = time_major(sequences[pick(sequences.shape[0], settings.convergence_points, seed,
                                      dataset, "probe").to(sequences.device)])
    phases = {"begin": initial_params(settings, seed, dataset, 0, device=torch_dev),
              "end": load_checkpoint(weights, dtype=DTYPES[settings.dtype], device=torch_dev)}
    arrays = {}
    for phase, params in phases.items():
        for method, errors in convergence_traces(params, probe).items():
            arrays[f"{phase}_{method}"] = errors
    write_npz(convergence, {"sequence_length": probe.shape[0], **arrays})


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


# ----------------------------------------------------------------------------------- the jobs


def measure_job(job: Job) -> dict:
    """The ``rnn_backprop_measure`` rule."""
    return measure(
        settings_from(MeasureSettings, job.params.settings, "rnn_backprop"),
        data=job.input.dataset,
        **measure_arguments(job),
        device=job.params.device,
        weights=job.output.weights,
    )


def convergence_job(job: Job) -> None:
    """The ``rnn_backprop_convergence`` rule."""
    convergence_runs(
        settings_from(MeasureSettings, job.params.settings, "rnn_backprop"),
        data=job.input.dataset,
        dataset=job.wildcards.dataset,
        seed=job.params.seed,
        device=job.params.device,
        weights=job.input.weights,
        convergence=job.output.convergence,
    )
