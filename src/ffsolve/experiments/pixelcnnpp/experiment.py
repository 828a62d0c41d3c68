"""PixelCNN++ sampling (paper §2.4–2.8): train a model from data, then sample it with every method.

:func:`train` fits PixelCNN++ by maximum likelihood (bits per dimension on train and test logged,
checkpoint written). :func:`measure` loads the weights, draws one fixed noise tensor, and runs
every configured method in one process on those weights and that noise through the shared harness
(DESIGN.md §7): timed repeats interleaved round-robin, the timed outputs checked against
``sequential``, one traced run per method for the figures. ``*_job`` adapt them to Snakemake rules.

PRNG keys come from named seed streams (``ffsolve.kit.seeds``): ``pixelcnnpp/<dataset>/init``,
``.../data`` and ``.../noise``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Mapping, Optional, Union

import numpy as np

from ffsolve.kit import (
    Job,
    RunContext,
    TimingSettings,
    expand_runs,
    jax_key,
    measure_and_write,
    measure_arguments,
    progress,
    settings_from,
    write_json,
)

log = logging.getLogger(__name__)
EXPERIMENT = "pixelcnnpp"


@dataclass(frozen=True)
class Training:
    """``pixelcnnpp.train``: maximum-likelihood training with Adam (optax)."""

    steps: int
    batch: int
    lr: float
    lr_decay: float
    eval_every: int
    test_images: int


@dataclass(frozen=True)
class MeasureSettings:
    """``pixelcnnpp.*`` for one dataset (see config.schema.yaml beside this file)."""

    methods: tuple[str, ...]
    # One list for every block method, or a list per method ({jacobi_gs: [28], gs_jacobi: [112]}).
    block_sizes: Union[tuple[int, ...], dict]
    tol: float
    nr_resnet: int
    nr_filters: int
    nr_logistic_mix: int
    checkpoint: Optional[str]
    batch: int
    train: Training
    # The speed/error frontier: each parallel method again at each tolerance > 0 (a list, or
    # {method or run name: list}).
    frontier_tols: Union[tuple[float, ...], dict] = ()


@dataclass(frozen=True)
class TrainSettings:
    """What ``pixelcnnpp_train`` reads (:data:`ffsolve.experiments.pixelcnnpp.TRAIN_KEYS`): the
    architecture and ``train``."""

    nr_resnet: int
    nr_filters: int
    nr_logistic_mix: int
    train: Training


def make_model(settings: MeasureSettings | TrainSettings):
    from ffsolve.experiments.pixelcnnpp.model import PixelCNNPP

    return PixelCNNPP(nr_resnet=settings.nr_resnet, nr_filters=settings.nr_filters,
                      nr_logistic_mix=settings.nr_logistic_mix)


def run_specs(settings: MeasureSettings):
    """Every configured run: each block method once per block size (in positions)."""
    from ffsolve.experiments.pixelcnnpp.system import BLOCKED

    return expand_runs(settings.methods, settings.block_sizes, blocked=BLOCKED, tols=settings.frontier_tols)


def runs(settings: MeasureSettings) -> list[str]:
    return [spec.name for spec in run_specs(settings)]


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W[, C]) -> float32 (N, H, W, C) in [−1, 1] on the 256 levels."""
    x = images.astype(np.float32) / 127.5 - 1.0
    return x[..., None] if x.ndim == 3 else x


# -- training -------------------------------------------------------------------------------------
def train(settings: TrainSettings, *, dataset: str, seed: int, data: str, checkpoint: str,
          record: str) -> dict:
    """Fit the model to the prepared data at ``data``; write the checkpoint and the training
    record (``record``)."""
    from ffsolve.data import load_prepared

    prepared = load_prepared(data)
    summary = fit(settings, to_model_range(prepared.train_images),
                  to_model_range(prepared.test_images[: settings.train.test_images]),
                  dataset=dataset, seed=seed, checkpoint_path=checkpoint)
    write_json(record, summary)
    return summary


def fit(settings: MeasureSettings | TrainSettings, train_x: np.ndarray, test_x: np.ndarray, *, dataset: str, seed: int,
        checkpoint_path: str, time_limit_s: float | None = None) -> dict:
    """Maximum likelihood with Adam on ``train_x`` (float32 (N, H, W, C) in [−1, 1]) for
    ``settings.train.steps`` steps, or until ``time_limit_s`` seconds of training have passed
    (checked after every step; the learning-rate schedule still spans ``steps``). Test bits/dim
    on ``test_x`` every ``eval_every`` steps and at the end; the checkpoint is written at every
    evaluation (so an interrupted run leaves its latest weights) and at the end. Returns the
    training record (history, final test bits/dim, why it stopped)."""
    import jax
    import jax.numpy as jnp
    import optax

    from ffsolve.experiments.pixelcnnpp import mixture
    from ffsolve.experiments.pixelcnnpp.model import architecture, save_checkpoint

    tcfg = settings.train
    batch = tcfg.batch
    if batch > len(train_x):
        raise ValueError(f"config key 'pixelcnnpp.train.batch' is {batch}, more than the "
                         f"{len(train_x)} training images of {dataset}")
    if len(test_x) < batch:
        raise ValueError(f"config key 'pixelcnnpp.train.test_images' gives {len(test_x)} test "
                         f"images of {dataset}, fewer than one batch of {batch}")
    model = make_model(settings)
    params = model.init(jax_key(seed, EXPERIMENT, dataset, "init"), jnp.asarray(train_x[:1]))["params"]
    optimizer = optax.adam(optax.exponential_decay(tcfg.lr, tcfg.steps, tcfg.lr_decay))
    opt_state = optimizer.init(params)
    arch = architecture(model, train_x.shape[1:])

    def loss_fn(p, x):
        return mixture.bits_per_dim(model.apply({"params": p}, x), x)

    @jax.jit
    def step(p, state, x):
        loss, grads = jax.value_and_grad(loss_fn)(p, x)
        updates, state = optimizer.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    eval_bpd = jax.jit(loss_fn)

    def test_bpd(p) -> float:
        chunks = [eval_bpd(p, jnp.asarray(test_x[i: i + batch]))
                  for i in range(0, len(test_x) - batch + 1, batch)]
        return float(np.mean(chunks))

    history, running = [], []
    order_key = jax_key(seed, EXPERIMENT, dataset, "data")
    per_epoch = len(train_x) // batch
    stopped = "steps"
    start = time.perf_counter()
    for i in progress(range(tcfg.steps), desc=f"train pixelcnnpp {dataset}"):
        if i % per_epoch == 0:  # a fresh shuffle each epoch, from the data stream
            order = np.asarray(jax.random.permutation(jax.random.fold_in(order_key, i // per_epoch),
                                                      len(train_x)))
        idx = order[(i % per_epoch) * batch: (i % per_epoch + 1) * batch]
        params, opt_state, loss = step(params, opt_state, jnp.asarray(train_x[idx]))
        running.append(float(loss))
        if not np.isfinite(running[-1]):
            raise FloatingPointError(f"training loss became {running[-1]} at step {i}; lower "
                                     "config key 'pixelcnnpp.train.lr'")
        out_of_time = time_limit_s is not None and time.perf_counter() - start >= time_limit_s
        if (i + 1) % tcfg.eval_every == 0 or i + 1 == tcfg.steps or out_of_time:
            entry = {"step": i + 1, "train_bpd": float(np.mean(running)),
                     "test_bpd": test_bpd(params), "elapsed_s": time.perf_counter() - start}
            running = []
            history.append(entry)
            save_checkpoint(params, checkpoint_path, arch)
            log.info("step %(step)d: train %(train_bpd).3f bits/dim, test %(test_bpd).3f bits/dim", entry)
        if out_of_time:
            stopped = f"time limit {time_limit_s:g} s"
            break
    return {"experiment": EXPERIMENT, "dataset": dataset, "architecture": arch,
            "train": asdict(tcfg), "seed": seed, "history": history, "steps_done": history[-1]["step"],
            "stopped_by": stopped, "final_test_bpd": history[-1]["test_bpd"],
            "train_images": len(train_x), "test_images": len(test_x),
            "wall_time_s": time.perf_counter() - start}


# -- measuring ------------------------------------------------------------------------------------
def measure(settings: MeasureSettings, *, dataset: str, seed: int, timing: TimingSettings,
            metrics: Mapping[str, str], traces: Mapping[str, str], threads: Optional[int] = None,
            autotune: Optional[str] = None, device: str, data: str, checkpoint: str) -> dict:
    """Every configured method in one process on the same weights and noise; one record each.
    ``autotune``: the decisions file of the ``auto`` runs (``None``: kept in memory only)."""
    from ffsolve.kit import auto_settings

    import jax

    from ffsolve.experiments.pixelcnnpp import mixture
    from ffsolve.experiments.pixelcnnpp.model import load_checkpoint
    from ffsolve.experiments.pixelcnnpp.system import Sampler, component_choices
    from ffsolve.kit import device_description, jax_device

    if "sequential" not in settings.methods:
        raise ValueError("config key 'pixelcnnpp.methods' must include sequential (the reference)")
    shape = _image_shape(data)
    model = make_model(settings)
    batch = settings.batch
    chosen = jax_device(device)
    with jax.default_device(chosen):
        params = load_checkpoint(checkpoint, model, shape)
        noise = mixture.draw_noise(jax_key(seed, EXPERIMENT, dataset, "noise"), (batch,) + shape,
                                   settings.nr_logistic_mix)
        sampler = Sampler(model, params, noise)
        extra = {"sample_batch_size": batch, "image_shape": list(shape),
                 "model": {"nr_resnet": settings.nr_resnet, "nr_filters": settings.nr_filters,
                           "nr_logistic_mix": settings.nr_logistic_mix},
                 "checkpoint": str(checkpoint)}
        log.info("sampling %d x %s on %s, runs %s", batch, shape, chosen, list(metrics))
        key = {"experiment": EXPERIMENT, "dataset": dataset, "shape": noise.value.shape,
               "dtype": noise.value.dtype, "device": chosen, "model": extra["model"],
               "tol": settings.tol}
        def flips(measurements):
            """Where a run may only be within tolerance, say whether a mixture component flipped."""
            ref_choice, ref_margin = component_choices(model, params, noise, measurements["sequential"].result.x)
            for m in measurements.values():
                if m.candidate.tolerance is not None:
                    choice, _ = component_choices(model, params, noise, m.result.x)
                    m.candidate.extra.update(component_flips=int(np.sum(choice != ref_choice)),
                                             reference_min_component_margin=float(ref_margin.min()))
                    if not m.within_tolerance:
                        log.warning("%s: max |diff| %.3g breaks %s (%d component flips)", m.candidate.name,
                                    m.max_abs_diff, m.candidate.tolerance.rule,
                                    m.candidate.extra["component_flips"])

        context = RunContext(EXPERIMENT, dataset, seed, device_description(chosen), batch, threads)
        return measure_and_write(measured_candidates(sampler, settings, extra, auto_settings(timing, autotune), key),
                                 context, timing=timing, metrics=metrics, traces=traces, after=flips)


def measured_candidates(sampler, settings: MeasureSettings, extra: dict, auto=None, key=None) -> list:
    """Every configured run's candidate, each at its own stopping tolerance (frontier runs
    ``<method>_t<tol>``; the others at ``tol``), then ``auto`` (ffsolve.kit.auto, with ``auto``
    its :class:`~ffsolve.kit.auto.AutoSettings` and ``key`` the problem its decision is kept
    under): the strongest sequential loop configured (the per-pixel ``sequential_cache``, else
    the naive loop) piloted on its first 2% of positions and scaled by T/k. The cached loop is
    within a tolerance of ``sequential``, not bitwise: it answers an exact ``auto`` run only
    where within-tolerance answers are allowed, and otherwise predicts nothing (the parallel
    runs then go first, each cut by the best time so far, the naive loop last)."""
    from types import SimpleNamespace

    import jax.numpy as jnp

    import ffsolve
    from ffsolve.experiments.pixelcnnpp.system import candidates
    from ffsolve.kit import add_auto, loop_pilot, pilot_steps, split_auto

    specs, autos = split_auto(run_specs(settings))
    out = []
    for tol in dict.fromkeys(spec.stopping_tol(settings.tol) for spec in specs):
        out += candidates(sampler, [s for s in specs if s.stopping_tol(settings.tol) == tol], tol, extra)
    order = {spec.name: i for i, spec in enumerate(specs)}
    out.sort(key=lambda c: order[c.name])
    length = sampler.length
    if "sequential_cache" in order:
        # The cached loop does one pass of work in all: racing the parallel runs against the naive
        # loop instead would let them spend the budget before the cached loop is ever tried.
        baseline = "sequential_cache"
        init, loop, _ = sampler._compiled_loop(baseline, None, settings.tol)

        def run_steps(k):
            return SimpleNamespace(x=loop(init(), sampler.noise, jnp.int32(k))[0])
    else:
        baseline = "sequential"

        def run_steps(k):
            return ffsolve.solve(sampler.f, sampler.initial(), method="sequential", max_iters=k,
                                 axis=1)
    pilot = loop_pilot(run_steps, pilot_steps(length), length)
    return add_auto(out, autos, settings=auto, baseline=baseline, baseline_pilot=pilot, key=key)


def _image_shape(path) -> tuple[int, int, int]:
    from ffsolve.data import load_prepared

    images = load_prepared(path).test_images
    return tuple(images.shape[1:]) if images.ndim == 4 else tuple(images.shape[1:]) + (1,)


# -- Snakemake adapters ---------------------------------------------------------------------------
def train_job(job: Job) -> dict:
    """The ``pixelcnnpp_train`` rule."""
    return train(
        settings_from(TrainSettings, job.params.settings, EXPERIMENT),
        dataset=job.wildcards.dataset,
        seed=job.params.seed,
        data=job.input.data,
        checkpoint=job.output.checkpoint,
        record=job.output.record,
    )


def measure_job(job: Job) -> dict:
    """The ``pixelcnnpp_measure`` rule."""
    return measure(
        settings_from(MeasureSettings, job.params.settings, EXPERIMENT),
        **measure_arguments(job),
        device=job.params.device,
        data=job.input.data,
        checkpoint=job.input.checkpoint,
    )
