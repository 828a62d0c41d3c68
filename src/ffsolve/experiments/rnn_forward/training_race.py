"""Training through the solvers: the next-pixel GRU trained with the loop and with parallel
forward and backward passes, from the same weights on the same batches, in one process.

Every *variant* trains its own copy of one initial :class:`NextPixelGRU` with Adam (gradients
clipped to norm 1, as :func:`~ffsolve.experiments.rnn_forward.experiment.fit`) on the same
sequence of random batches of binarized MNIST (T = 784). Only how the states and their gradients
are computed differs:

* ``nn_gru``: ``torch.nn.GRU`` and autograd (the fused kernel a PyTorch user trains with);
* ``loop``: :func:`ffsolve.solve_recurrence` ``"sequential"`` forward, ``backward="loop"``
  (backpropagation through time, one step call per time step);
* ``parallel``: a parallel forward method at ``tol=0`` and a parallel backward (``"jacobi"`` or
  ``"scan"``): exact states, gradients within rounding of the loop's;
* ``parallel_tol``: the same forward method and backward at a forward tolerance (default 1e-4).

The steps are interleaved (step k of every variant, then step k + 1), so the per-step times come
from the same moments of the machine. :func:`pick_parallel` chooses the parallel pair by timing
each candidate's forward + backward on the first batch (median of ``pilot_repeats``), in the same
process.

The loss curves cannot be equal bit for bit: the parameter gradients sum their T per-step parts
in another order than autograd's (see :func:`ffsolve.solve_recurrence`), and Adam carries the
rounding on. :data:`CURVE_TOLERANCE` is the agreement claimed, tested against a deliberately wrong
backward (gradients that stop at one time step) that must fail it.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

#: Largest |loss_variant − loss_loop| over the curve, in bits per pixel, claimed for variants
#: whose states are exact (tol 0). Their gradients differ from the loop's only by rounding (parts
#: summed in another order), which Adam carries on at about the unit roundoff per step; the
#: benchmark reports the measured gap beside this bound (``max loss gap to loop``). Gradients
#: truncated at one time step (tests/experiments/rnn_forward/test_training_race.py) move the loss
#: by 6e-3 within six steps of the test's small race, so the bound separates them.
CURVE_TOLERANCE = 1.0e-3

PILOT_FORWARDS = ("jacobi", "newton", "quasi_newton")
PILOT_BACKWARDS = ("jacobi", "scan")
PILOT_DROP = 3.0


@dataclass(frozen=True)
class Variant:
    """How one variant computes the states and their gradients."""

    name: str
    forward: str  # "native" (torch.nn.GRU) or a solve_recurrence method
    backward: str  # "autograd" for native, else a solve_recurrence backward
    tol: float = 0.0


@dataclass(frozen=True)
class RaceSettings:
    steps: int = 60
    batch: int = 16
    hidden_size: int = 16
    lr: float = 1.0e-2
    tol: float = 1.0e-4
    test_images: int = 200
    pilot_repeats: int = 3
    seed: int = 0


@dataclass
class VariantRun:
    variant: Variant
    model: object
    optimizer: object
    losses: list = field(default_factory=list)  # bits per pixel of each step's batch
    seconds: list = field(default_factory=list)  # wall time of each training step
    forward_iterations: list = field(default_factory=list)


def _gru_cell(model):
    from ffsolve.recurrence import cells

    gru = model.gru
    return cells.gru(gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)


def states(model, variant: Variant, inputs, deadline=None):
    """(states (T, B, H), the forward's RecurrenceResult or None) by ``variant``, attached to
    autograd."""
    import torch

    import ffsolve

    if variant.forward == "native":
        return model.gru(inputs)[0], None
    s0 = torch.zeros(inputs.shape[1], model.hidden_size, dtype=inputs.dtype)
    res = ffsolve.solve_recurrence(_gru_cell(model), s0, inputs, variant.forward, tol=variant.tol,
                                   backward=variant.backward, check_loop=False, deadline=deadline)
    return res.x, res


def loss_and_gradients(model, variant: Variant, inputs, targets, deadline=None):
    """The batch loss (nats, detached) after ``backward()``, and the forward's result (or None)."""
    import torch

    model.zero_grad(set_to_none=True)
    hidden, result = states(model, variant, inputs, deadline)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model.logits(hidden), targets)
    loss.backward()
    return loss.detach(), result


def train_step(run: VariantRun, inputs, targets) -> None:
    import torch

    start = time.perf_counter()
    loss, result = loss_and_gradients(run.model, run.variant, inputs, targets)
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
    run.optimizer.step()
    run.seconds.append(time.perf_counter() - start)
    value = float(loss) / math.log(2.0)
    if not math.isfinite(value):
        raise FloatingPointError(f"variant {run.variant.name} diverged at step {len(run.losses) + 1}")
    run.losses.append(value)
    run.forward_iterations.append(None if result is None else result.iterations)


def pick_parallel(model, inputs, targets, repeats: int,
                  forwards=PILOT_FORWARDS, backwards=PILOT_BACKWARDS) -> tuple[str, str, dict]:
    """The fastest (forward, backward) pair at tol 0 on one batch: median of ``repeats`` timed
    forward + backward passes each, rounds interleaved, after one warm-up call each. A pair whose
    warm-up forward runs past :data:`PILOT_DROP` × the best warm-up so far is stopped there (its
    deadline) and dropped: it cannot win. Returns the pair and every median (``None``: dropped)."""
    probe = copy.deepcopy(model)
    pairs, kept, best = [(f, b) for f in forwards for b in backwards], [], math.inf
    for pair in pairs:  # warm-up: first calls build caches
        start = time.perf_counter()
        _, result = loss_and_gradients(probe, Variant("pilot", *pair), inputs, targets,
                                       deadline=start + PILOT_DROP * best)
        if result is not None and result.stopped_by == "deadline":
            continue
        kept.append(pair)
        best = min(best, time.perf_counter() - start)
    times = {pair: [] for pair in kept}
    for _ in range(repeats):
        for pair in kept:
            start = time.perf_counter()
            loss_and_gradients(probe, Variant("pilot", *pair), inputs, targets)
            times[pair].append(time.perf_counter() - start)
    medians = {f"{f}+{b}": (statistics.median(times[(f, b)]) if (f, b) in times else None)
               for f, b in pairs}
    chosen = min(kept, key=lambda pair: statistics.median(times[pair]))
    return chosen[0], chosen[1], medians


def variants_for(forward: str, backward: str, tol: float) -> list[Variant]:
    return [
        Variant("nn_gru", "native", "autograd"),
        Variant("loop", "sequential", "loop"),
        Variant("parallel", forward, backward, 0.0),
        Variant("parallel_tol", forward, backward, tol),
    ]


def race(train_images: np.ndarray, test_images: np.ndarray, settings: RaceSettings, *,
         variants: list[Variant] | None = None, progress=None) -> dict:
    """Train every variant for ``settings.steps`` interleaved steps; returns the record."""
    import torch

    from ffsolve.experiments.rnn_forward.cases import pixel_sequences
    from ffsolve.experiments.rnn_forward.model import NextPixelGRU, bits_per_pixel
    from ffsolve.kit import seed_stream

    torch.manual_seed(seed_stream(settings.seed, "rnn_forward", "training_race", "init"))
    initial = NextPixelGRU(settings.hidden_size)
    batches = torch.Generator().manual_seed(seed_stream(settings.seed, "rnn_forward", "training_race",
                                                        "batches"))
    train_u, train_x = (torch.from_numpy(a) for a in pixel_sequences(train_images))
    test_u, test_x = (torch.from_numpy(a) for a in pixel_sequences(test_images[: settings.test_images]))
    order = [torch.randint(0, train_u.shape[1], (settings.batch,), generator=batches)
             for _ in range(settings.steps)]
    pilot = None
    if variants is None:
        forward, backward, medians = pick_parallel(initial, train_u[:, order[0]], train_x[:, order[0]],
                                                   settings.pilot_repeats)
        pilot = {"medians_s": medians, "chosen": f"{forward}+{backward}"}
        log.info("pilot (forward+backward, median s): %s; chose %s", medians, pilot["chosen"])
        variants = variants_for(forward, backward, settings.tol)
    runs = []
    for variant in variants:
        model = copy.deepcopy(initial).train()
        runs.append(VariantRun(variant, model, torch.optim.Adam(model.parameters(), lr=settings.lr)))
    steps = range(settings.steps)
    for step in (progress(steps, desc="training race", total=settings.steps) if progress else steps):
        inputs, targets = train_u[:, order[step]], train_x[:, order[step]]
        for run in runs:
            train_step(run, inputs, targets)
    reference = next((r for r in runs if r.variant.name == "loop"), runs[0])
    out = []
    for run in runs:
        with torch.no_grad():
            test_bits = bits_per_pixel(run.model(test_u), test_x)
        gap = max(abs(a - b) for a, b in zip(run.losses, reference.losses))
        out.append({
            "name": run.variant.name,
            "forward": run.variant.forward,
            "backward": run.variant.backward,
            "tol": run.variant.tol,
            "losses_bits_per_pixel": run.losses,
            "step_seconds": run.seconds,
            "median_step_s": statistics.median(run.seconds),
            "step_s_quartiles": _quartiles(run.seconds),
            "forward_iterations": run.forward_iterations,
            "final_train_bits_per_pixel": run.losses[-1],
            "final_test_bits_per_pixel": test_bits,
            "max_curve_gap_to_loop": gap,
            "within_curve_tolerance": bool(gap <= CURVE_TOLERANCE),
        })
    return {
        "settings": settings.__dict__,
        "curve_tolerance_bits_per_pixel": CURVE_TOLERANCE,
        "reference": reference.variant.name,
        "pilot": pilot,
        "threads": torch.get_num_threads(),
        "variants": out,
    }


def _quartiles(values) -> list[float]:
    q = np.percentile(np.asarray(values, dtype=float), [25, 75])
    return [float(q[0]), float(q[1])]


def markdown_table(record: dict) -> str:
    """The training table: one row per variant, times relative to the loop's."""
    by_name = {v["name"]: v for v in record["variants"]}
    loop = by_name.get("loop")
    lines = ["| variant | forward | backward | forward tol | median s / step (IQR) | × loop | "
             "forward iterations (median) | final train bits/pixel | test bits/pixel | "
             "max loss gap to loop | within tolerance |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in record["variants"]:
        iters = [i for i in v["forward_iterations"] if i is not None]
        ratio = f"{v['median_step_s'] / loop['median_step_s']:.2f}" if loop else "–"
        q1, q3 = v["step_s_quartiles"]
        lines.append(
            f"| {v['name']} | {v['forward']} | {v['backward']} | {v['tol']:g} | "
            f"{v['median_step_s']:.4g} ({q1:.4g}–{q3:.4g}) | {ratio} | "
            f"{statistics.median(iters) if iters else '–'} | {v['final_train_bits_per_pixel']:.4f} | "
            f"{v['final_test_bits_per_pixel']:.4f} | {v['max_curve_gap_to_loop']:.2e} | "
            f"{'yes' if v['within_curve_tolerance'] else 'no'} |")
    return "\n".join(lines) + "\n"


def plot(record: dict, path) -> None:
    """Loss against cumulative training wall-clock, one line per variant (the paper's RNN figure)."""
    from ffsolve.kit import plt, save

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for v in record["variants"]:
        clock = np.cumsum(v["step_seconds"])
        ax.plot(clock, v["losses_bits_per_pixel"], label=f"{v['name']} ({v['forward']} / {v['backward']}"
                + (f", tol {v['tol']:g}" if v["tol"] else "") + ")")
    ax.set_xlabel("training wall-clock (s)")
    ax.set_ylabel("batch loss (bits / pixel)")
    ax.set_title("Next-pixel GRU on binarized MNIST: loss against time")
    ax.legend(fontsize=8)
    save(fig, str(path))
