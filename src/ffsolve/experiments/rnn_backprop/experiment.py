"""RNN backpropagation experiment (paper §2.1): train one vanilla RNN per backward method.

``train(job)`` is one run (sequential BPTT, Jacobi with a budget or a tolerance, or a parallel
scan): it checks the method's gradients against autograd and against sequential BPTT on the same
weights and data, times one backward pass, then trains ``repeats`` × ``steps`` SGD steps with the
same seeds as every other run, recording the loss and the wall-clock time per step.
``convergence(job)`` records the gradient error per parallel iteration at the start and at the end
of (sequential) training, for the convergence figure.

Data: each image is resized to ``image_size``² (bilinear with antialiasing, as torchvision's
``Resize`` does for PIL images in the original), scaled to [0, 1] and read in raster order as a
sequence of T = ``image_size``² scalars.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

import ffsolve
from ffsolve.data import Dataset, load_prepared
from ffsolve.experiments.rnn_backprop_backward import (
    BackwardSpec,
    backward,
    bptt_adjoints,
    flipped_system,
    hillis_steele_scan,
)
from ffsolve.experiments.rnn_backprop_runs import parse_run
from ffsolve.jobs import Job, progress
from ffsolve.models.rnn_backprop import (
    RNNParams,
    autograd_gradients,
    forward,
    gradients_from_adjoints,
    init_params,
    load_params,
    save_params,
)
from ffsolve.results import write_metrics, write_trace
from ffsolve.runtime import device_description, seed_everything, torch_device
from ffsolve.timing import time_call

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Settings every job reads; checked here too so that library callers (tests, notebooks) get the
# same messages as a Snakemake run, whose schema checks the types first.
_POSITIVE_INTS = ("hidden_size", "steps", "repeats", "batch_size", "convergence_points")


def check_settings(cfg: Mapping) -> dict:
    """The ``rnn_backprop`` section, checked; ``ValueError`` naming the offending key otherwise."""
    cfg = dict(cfg)
    for key in _POSITIVE_INTS:
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"rnn_backprop.{key} must be a positive integer, got {value!r}")
    image_size = cfg.get("image_size")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 2):
        raise ValueError(
            f"rnn_backprop.image_size must be an integer >= 2 (T = image_size²) or null "
            f"(keep the native size), got {image_size!r}"
        )
    for key in ("lr", "init_std"):
        if not isinstance(cfg.get(key), (int, float)) or not cfg[key] > 0:
            raise ValueError(f"rnn_backprop.{key} must be a number > 0, got {cfg.get(key)!r}")
    if not isinstance(cfg.get("ema_decay"), (int, float)) or not 0 <= cfg["ema_decay"] < 1:
        raise ValueError(f"rnn_backprop.ema_decay must be in [0, 1), got {cfg.get('ema_decay')!r}")
    budgets = cfg.get("jacobi_budgets", [])
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in budgets):
        raise ValueError(f"rnn_backprop.jacobi_budgets must be positive integers, got {budgets!r}")
    tol = cfg.get("jacobi_tol")
    if tol is not None and (not isinstance(tol, (int, float)) or tol < 0):
        raise ValueError(f"rnn_backprop.jacobi_tol must be a number >= 0 or null, got {tol!r}")
    if cfg.get("dtype") not in DTYPES:
        raise ValueError(
            f"rnn_backprop.dtype must be one of {list(DTYPES)}, got {cfg.get('dtype')!r}")
    if not isinstance(cfg.get("exact_rtol"), (int, float)) or cfg["exact_rtol"] <= 0:
        raise ValueError(
            f"rnn_backprop.exact_rtol must be a number > 0, got {cfg.get('exact_rtol')!r}")
    return cfg


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


def repeat_generators(seed: int, repeat: int) -> tuple[torch.Generator, torch.Generator]:
    """Generators for the initial weights and the data order of one repeat: the same in every run."""
    init_seed, order_seed = np.random.SeedSequence([seed, repeat]).generate_state(2)
    return (torch.Generator().manual_seed(int(init_seed)),
            torch.Generator().manual_seed(int(order_seed)))


def probe_points(count: int, points: int, seed: int) -> torch.Tensor:
    """The fixed data points of the gradient checks and convergence traces."""
    probe_seed = np.random.SeedSequence([seed, 999]).generate_state(1)[0]
    generator = torch.Generator().manual_seed(int(probe_seed))
    return torch.randperm(count, generator=generator)[:points]


# ----------------------------------------------------------------------------------- checks


def relative_error(a: RNNParams, b: RNNParams) -> float:
    """||a − b|| / ||b|| over all parameters at once (0 when both vanish)."""
    diff, ref = a.flat() - b.flat(), b.flat()
    norm = float(ref.norm())
    return float(diff.norm()) / norm if norm > 0 else float(diff.norm())


def gradient_check(params: RNNParams, x: torch.Tensor, spec: BackwardSpec) -> dict:
    """The method's gradients against autograd's, in float64 so that only the method is judged."""
    params64, x64 = params.to(dtype=torch.float64), x.to(torch.float64)
    result = backward(params64, forward(params64, x64), spec)
    reference, _ = autograd_gradients(params64, x64)
    return {
        "rel_error_vs_autograd": relative_error(result.grads, reference),
        "iterations": result.iterations,
        "converged": result.converged,
    }


# --------------------------------------------------------------------------------- training


def sync_torch(value: torch.Tensor) -> torch.Tensor:
    """Wait for ``value``'s device. Torch only: ffsolve.timing.synchronize also tries JAX, whose
    first import (~1 s) would otherwise land inside the first timed step."""
    if value.is_cuda:
        torch.cuda.synchronize(value.device)
    return value



def train_repeat(params: RNNParams, data: torch.Tensor, order: torch.Tensor, spec: BackwardSpec,
                 lr: float, ema_decay: float, desc: str) -> dict[str, np.ndarray]:
    """SGD on ``params`` in place; per step: loss, EMA loss, cumulative seconds, iterations, and
    the seconds of the backward pass alone.

    The clock covers everything a step does (batch gather, sequential forward, backward by
    ``spec``, update, reading the loss back), as the original's did, minus its print. The
    backward pass is also clocked on its own (after a device sync): hundreds of samples give a
    steadier median than a few separate timing calls on a shared machine.
    """
    steps = order.shape[0]
    out = {key: np.zeros(steps) for key in ("loss", "ema_loss", "time_s", "backward_s")}
    out["iterations"] = np.zeros(steps, dtype=np.int64)
    ema, elapsed = None, 0.0
    for step in progress(range(steps), desc=desc):
        start = time.perf_counter()
        x = time_major(data[order[step]])
        cache = forward(params, x)
        sync_torch(cache.loss)
        backward_start = time.perf_counter()
        result = backward(params, cache, spec)
        sync_torch(result.grads.b_o)
        out["backward_s"][step] = time.perf_counter() - backward_start
        params.sgd_step_(result.grads, lr)
        loss = float(sync_torch(cache.loss))
        elapsed += time.perf_counter() - start
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"{desc}: loss became {loss} at step {step}; lower rnn_backprop.lr or init_std"
            )
        ema = loss if ema is None else ema_decay * ema + (1 - ema_decay) * loss
        out["loss"][step], out["ema_loss"][step], out["time_s"][step] = loss, ema, elapsed
        out["iterations"][step] = result.iterations
    return out


def train(job: Job) -> dict:
    """One run: checks, backward timing, then the training curves and the final weights."""
    cfg = check_settings(job.config["rnn_backprop"])
    seed = int(job.config["seed"])
    seed_everything(seed)
    run = job.wildcards.run
    spec = BackwardSpec(**parse_run(run, cfg))
    device = torch_device(job.config["device"])
    dtype = DTYPES[cfg["dtype"]]
    dataset = load_prepared(job.input.dataset)
    data = dataset_sequences(dataset, "train", cfg["image_size"]).to(device=device, dtype=dtype)
    length = data.shape[1]
    log.info("%s on %s: %d sequences of T = %d, %s, %s", run, dataset.name, data.shape[0],
             length, spec, device)

    # Same weights and data for every run: repeat 0's initial weights and the probe points.
    init_gen, _ = repeat_generators(seed, 0)
    params0 = init_params(cfg["hidden_size"], cfg["init_std"], init_gen, dtype=dtype, device=device)
    probe = time_major(data[probe_points(data.shape[0], cfg["convergence_points"], seed)])
    check = gradient_check(params0, probe, spec)
    cache = forward(params0, probe)
    grads = backward(params0, cache, spec).grads
    reference = gradients_from_adjoints(params0, cache, bptt_adjoints(params0, cache))
    max_diff = float((grads.flat() - reference.flat()).abs().max())
    log.info("gradients: relative error vs autograd (float64) %.3g; max |diff| vs sequential "
             "BPTT (%s) %.3g", check["rel_error_vs_autograd"], cfg["dtype"], max_diff)

    # Backward-only timing on one training-size batch, separate from the training curves.
    timing_cfg = job.config["timing"]
    batch = probe[:, : cfg["batch_size"]]
    batch_cache = forward(params0, batch)
    backward_timing = time_call(lambda: backward(params0, batch_cache, spec).adjoints,
                                repeats=timing_cfg["repeats"], warmup=timing_cfg["warmup"],
                                sync=sync_torch)
    timed_iterations = backward(params0, batch_cache, spec).iterations

    curves, final_params = [], None
    for repeat in range(cfg["repeats"]):
        init_gen, order_gen = repeat_generators(seed, repeat)
        params = init_params(cfg["hidden_size"], cfg["init_std"], init_gen, dtype=dtype,
                             device=device)
        order = batch_indices(data.shape[0], cfg["steps"], cfg["batch_size"], order_gen).to(device)
        # Warm-up steps on a throwaway copy: allocator and first-call costs stay off the clock.
        if timing_cfg["warmup"]:
            train_repeat(params.clone(), data, order[: timing_cfg["warmup"]], spec, cfg["lr"],
                         cfg["ema_decay"], desc=f"{run} warm-up")
        curves.append(train_repeat(params, data, order, spec, cfg["lr"], cfg["ema_decay"],
                                   desc=f"{run} repeat {repeat + 1}/{cfg['repeats']}"))
        if repeat == 0:
            final_params = params
    stacked = {key: np.stack([c[key] for c in curves]) for key in curves[0]}
    step_times = np.diff(stacked["time_s"], axis=1, prepend=0.0)
    write_trace(job.output.training, **stacked)
    save_params(final_params, job.output.weights)

    final_loss = stacked["ema_loss"][:, -1]
    record = {
        "experiment": "rnn_backprop",
        "dataset": job.wildcards.dataset,
        "method": spec.method,
        "run": run,
        "block_size": None,
        "tol": spec.tol,
        "max_iters": spec.max_iters,
        "scan_algorithm": spec.scan_algorithm if spec.method == "scan" else None,
        "sequence_length": length,
        "hidden_size": cfg["hidden_size"],
        "batch_size": cfg["batch_size"],
        "iterations": timed_iterations,
        "iterations_train_mean": float(stacked["iterations"].mean()),
        "iterations_train_max": int(stacked["iterations"].max()),
        "converged": check["converged"],
        "wall_time_s": backward_timing.median_s,
        "wall_time_what": "one backward pass (adjoints + gradients), batch_size sequences",
        "timing": backward_timing.as_dict(),
        "step_time_s": float(np.median(step_times)),
        "backward_time_train_s": float(np.median(stacked["backward_s"])),
        "backward_time_train_iqr_s": float(
            np.subtract(*np.percentile(stacked["backward_s"], [75, 25]))),
        "step_time_iqr_s": float(np.subtract(*np.percentile(step_times, [75, 25]))),
        "train_time_s_mean": float(stacked["time_s"][:, -1].mean()),
        "final_ema_loss_mean": float(final_loss.mean()),
        "final_ema_loss_std": float(final_loss.std()),
        "steps": cfg["steps"],
        "repeats": cfg["repeats"],
        "lr": cfg["lr"],
        "max_abs_diff_vs_sequential": max_diff,
        "rel_error_vs_autograd": check["rel_error_vs_autograd"],
        "exact_match": check["rel_error_vs_autograd"] <= cfg["exact_rtol"],
        "exact_match_meaning": (
            f"gradients within relative error {cfg['exact_rtol']:g} of PyTorch autograd, in "
            f"float64, at the initial weights on {cfg['convergence_points']} probe sequences"
        ),
        "dtype": cfg["dtype"],
        "device": device_description(device),
        "threads": job.threads,
        "seed": seed,
    }
    log.info("%s: backward %.3g ms (median), step %.3g ms, final EMA loss %.4g, exact %s",
             run, 1e3 * record["wall_time_s"], 1e3 * record["step_time_s"],
             record["final_ema_loss_mean"], record["exact_match"])
    return write_metrics(job.output.metrics, record)


# ------------------------------------------------------------------------------ convergence


def per_example_errors(params: RNNParams, cache, flipped_iterates,
                       exact: torch.Tensor) -> np.ndarray:
    """L2 error of every data point's gradients at each iterate, ``(iterates, points)``."""
    errors = []
    for u in flipped_iterates:
        grads = gradients_from_adjoints(params, cache, u.flip(0), per_example=True)
        errors.append((grads.flat(batch_dims=1) - exact).norm(dim=1))
    return torch.stack(errors).cpu().numpy()


def convergence_traces(params: RNNParams, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Gradient error per parallel step for BPTT (GS), Jacobi and the Hillis–Steele scan.

    Index k is "after k steps" (0: adjoints all zero). Sequential BPTT fixes one more adjoint per
    step (T steps); Jacobi updates all from the last iterate; the scan doubles its exact reach
    each step. Errors are against each point's exact gradient (sequential BPTT, float64).
    """
    cache = forward(params, x)
    exact = gradients_from_adjoints(params, cache, bptt_adjoints(params, cache),
                                    per_example=True).flat(batch_dims=1)
    system = flipped_system(params, cache)
    zeros = torch.zeros_like(system.c)
    out = {}
    for method in ("sequential", "jacobi"):
        res = ffsolve.solve(system, zeros, method=method, tol=0.0, trace=True)
        iterates = torch.from_numpy(res.trace.iterates).to(x.device)
        out[method] = per_example_errors(params, cache, iterates, exact)
    steps = [zeros]
    hillis_steele_scan(system.step_matrices(), system.c, on_step=lambda c: steps.append(c.clone()))
    out["scan_hillis_steele"] = per_example_errors(params, cache, steps, exact)
    return out


def convergence(job: Job) -> None:
    """Traces at the initial weights (repeat 0) and after sequential training (its repeat 0)."""
    cfg = check_settings(job.config["rnn_backprop"])
    seed = int(job.config["seed"])
    seed_everything(seed)
    device = torch_device(job.config["device"])
    dataset = load_prepared(job.input.dataset)
    data = dataset_sequences(dataset, "train", cfg["image_size"]).to(device)
    probe = time_major(data[probe_points(data.shape[0], cfg["convergence_points"], seed)])
    init_gen, _ = repeat_generators(seed, 0)
    phases = {
        "begin": init_params(cfg["hidden_size"], cfg["init_std"], init_gen,
                             dtype=torch.float64, device=device),
        "end": load_params(job.input.weights, dtype=torch.float64, device=device),
    }
    arrays = {}
    for phase, params in phases.items():
        for method, errors in convergence_traces(params, probe).items():
            arrays[f"{phase}_{method}"] = errors
            log.info("%s %s: %d steps, final error %.3g (mean over %d points)", phase, method,
                     errors.shape[0] - 1, errors[-1].mean(), errors.shape[1])
    write_trace(job.output.convergence, sequence_length=probe.shape[0], **arrays)
