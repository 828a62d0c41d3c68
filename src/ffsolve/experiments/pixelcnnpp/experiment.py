"""PixelCNN++ sampling (paper §2.4–2.8): train a model from data, then sample it with every method.

``train(job)`` fits PixelCNN++ by maximum likelihood (bits per dimension on train and test logged,
checkpoint written). ``sample(job)`` loads the weights, draws one fixed noise tensor, and runs every
configured method in one process on those weights and that noise (DESIGN.md §7): a trace run
(per-iteration errors, for the figure), then timed runs that stop inside their loop.

PRNG keys are derived from ``config["seed"]`` by purpose (:func:`keys`), so training and sampling
use independent, reproducible streams.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ffsolve.jobs import Job, progress
from ffsolve.results import write_metrics, write_trace

log = logging.getLogger(__name__)
PURPOSES = ("init", "data", "noise")


def keys(seed: int) -> dict:
    """One independent PRNG key per purpose, all from the root seed."""
    return dict(zip(PURPOSES, jax.random.split(jax.random.PRNGKey(seed), len(PURPOSES))))


def settings(config: dict, dataset: str) -> dict:
    """The per-dataset section ``pixelcnnpp.settings.<dataset>``; an error naming the key if absent."""
    try:
        return config["pixelcnnpp"]["settings"][dataset]
    except KeyError:
        raise ValueError(
            f"config key 'pixelcnnpp.settings.{dataset}' is missing: add the dataset's model and "
            "sampling settings (see workflow/schemas/pixelcnnpp.schema.yaml)"
        ) from None


def make_model(cfg: dict):
    from ffsolve.models.pixelcnnpp import PixelCNNPP

    return PixelCNNPP(nr_resnet=cfg["nr_resnet"], nr_filters=cfg["nr_filters"],
                      nr_logistic_mix=cfg["nr_logistic_mix"])


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W[, C]) -> float32 (N, H, W, C) in [−1, 1] on the 256 levels."""
    x = images.astype(np.float32) / 127.5 - 1.0
    return x[..., None] if x.ndim == 3 else x


def runs(cfg_section: dict, dataset: str) -> list[tuple[str, str, Optional[int]]]:
    """(run name, method, block rows) for every configured method on ``dataset``."""
    from ffsolve.experiments.pixelcnnpp_samplers import BLOCK_METHODS

    block_rows = cfg_section["settings"][dataset]["block_rows"]
    out = []
    for method in cfg_section["methods"]:
        rows = block_rows[method] if method in BLOCK_METHODS else None
        # The results folder is the method's name: block heights are per dataset and are
        # recorded in metrics.json (block_rows), so the rule's outputs need only the methods.
        out.append((method, method, rows))
    return out


# -- training -------------------------------------------------------------------------------------
def train(job: Job) -> dict:
    import optax

    from ffsolve.data import load_prepared
    from ffsolve.models import pixelcnnpp_mixture as mixture
    from ffsolve.models.pixelcnnpp_checkpoint import architecture, save_checkpoint

    dataset = job.wildcards.dataset
    cfg = settings(job.config, dataset)
    tcfg = cfg["train"]
    seed = int(job.config["seed"])
    data = load_prepared(job.input.data)
    train_x = to_model_range(data.train_images)
    test_x = to_model_range(data.test_images[: tcfg["test_images"]])
    model = make_model(cfg)
    k = keys(seed)
    params = model.init(k["init"], jnp.asarray(train_x[:1]))["params"]
    schedule = optax.exponential_decay(tcfg["learning_rate"], tcfg["steps"], tcfg["lr_decay"])
    optimizer = optax.adam(schedule)
    opt_state = optimizer.init(params)

    def loss_fn(p, x):
        return mixture.bits_per_dim(model.apply({"params": p}, x), x)

    @jax.jit
    def step(p, state, x):
        loss, grads = jax.value_and_grad(loss_fn)(p, x)
        updates, state = optimizer.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    eval_bpd = jax.jit(loss_fn)
    batch = tcfg["batch_size"]
    if batch > len(train_x):
        raise ValueError(f"pixelcnnpp.settings.{dataset}.train.batch_size={batch} exceeds the "
                         f"{len(train_x)} training images")

    def test_bpd(p) -> float:
        chunks = [eval_bpd(p, jnp.asarray(test_x[i: i + batch]))
                  for i in range(0, len(test_x) - batch + 1, batch)]
        return float(np.mean(chunks))

    history, running = [], []
    order_key = k["data"]
    per_epoch = len(train_x) // batch
    start = time.perf_counter()
    for i in progress(range(tcfg["steps"]), desc=f"train pixelcnnpp {dataset}"):
        if i % per_epoch == 0:  # a fresh shuffle each epoch, from the data key
            order = np.asarray(jax.random.permutation(jax.random.fold_in(order_key, i // per_epoch),
                                                      len(train_x)))
        idx = order[(i % per_epoch) * batch: (i % per_epoch + 1) * batch]
        params, opt_state, loss = step(params, opt_state, jnp.asarray(train_x[idx]))
        running.append(float(loss))
        if not np.isfinite(running[-1]):
            raise FloatingPointError(
                f"training loss became {running[-1]} at step {i}; lower "
                f"pixelcnnpp.settings.{dataset}.train.learning_rate"
            )
        if (i + 1) % tcfg["eval_every"] == 0 or i + 1 == tcfg["steps"]:
            record = {"step": i + 1, "train_bpd": float(np.mean(running)),
                      "test_bpd": test_bpd(params), "elapsed_s": time.perf_counter() - start}
            running = []
            history.append(record)
            log.info("step %(step)d: train %(train_bpd).3f bits/dim, test %(test_bpd).3f bits/dim",
                     record)
    arch = architecture(model, train_x.shape[1:])
    save_checkpoint(job.output.checkpoint, params, arch)
    summary = {"experiment": "pixelcnnpp", "dataset": dataset, "architecture": arch,
               "train": tcfg, "seed": seed, "history": history,
               "final_test_bpd": history[-1]["test_bpd"], "train_images": len(train_x),
               "test_images": len(test_x), "wall_time_s": time.perf_counter() - start}
    Path(job.output.log_json).write_text(json.dumps(summary, indent=2))
    return summary


# -- sampling -------------------------------------------------------------------------------------
def sample(job: Job) -> list[dict]:
    """Every configured method on one dataset, in this process, on the same weights and noise."""
    from ffsolve.experiments.pixelcnnpp_samplers import Sampler, compare, time_fn
    from ffsolve.models import pixelcnnpp_mixture as mixture
    from ffsolve.models.pixelcnnpp_checkpoint import load_checkpoint
    from ffsolve.runtime import device_description, jax_device
    from ffsolve.timing import time_call

    dataset = job.wildcards.dataset
    section = job.config["pixelcnnpp"]
    cfg = settings(job.config, dataset)
    seed = int(job.config["seed"])
    device = jax_device(job.config["device"])
    data_shape = _image_shape(job.input.data)
    model = make_model(cfg)
    timing_cfg = dict(job.config["timing"])
    if section.get("repeats"):
        timing_cfg["repeats"] = section["repeats"]
    tol = float(section["tol"])
    batch = cfg["sample_batch_size"]
    outputs = {Path(m).parent.name: {"metrics": m, "trace": t}
               for m, t in zip(job.output.metrics, job.output.traces)}
    missing = [name for name, _, _ in runs(section, dataset) if name not in outputs]
    if missing:
        raise ValueError(f"the rule's outputs lack the runs {missing} (pixelcnnpp.methods)")
    with jax.default_device(device):
        params = load_checkpoint(job.input.checkpoint, model, data_shape)
        noise = mixture.draw_noise(keys(seed)["noise"], (batch,) + data_shape, cfg["nr_logistic_mix"])
        sampler = Sampler(model, params, noise)
        log.info("sampling %d x %s on %s; the sequential reference first", batch, data_shape, device)
        reference = sampler.run("sequential").images.astype(np.float64)
        records = []
        for name, method, rows in runs(section, dataset):
            traced = sampler.run(method, rows, tol, trace=True)
            # The trace run compiled what ffsolve.solve-based methods call; the cached timed loops
            # are compiled separately, so they get the configured warm-up.
            warmup = timing_cfg["warmup"] if method.endswith("_cache") else 0
            timing = time_call(time_fn(sampler, method, rows, tol),
                               repeats=timing_cfg["repeats"], warmup=warmup)
            check = compare(traced.images, reference, method)
            length = sampler.length
            if traced.iterations > length:
                raise RuntimeError(f"{name} took {traced.iterations} iterations > H*W = {length}")
            record = {
                "experiment": "pixelcnnpp", "dataset": dataset, "method": method, "run": name,
                "block_size": None if rows is None else rows * data_shape[1],
                "block_rows": rows, "tol": tol, "sequence_length": length,
                "iterations": traced.iterations, "converged": traced.converged,
                "per_sample_iterations": traced.per_sample_iterations,
                "wall_time_s": timing.median_s, "timing": timing.as_dict(),
                **check, "device": device_description(device), "threads": job.threads,
                "seed": seed, "sample_batch_size": batch, "image_shape": list(data_shape),
                "model": {k: cfg[k] for k in ("nr_resnet", "nr_filters", "nr_logistic_mix")},
                "loop": "jax.lax" if method.endswith("_cache") else "python loop around jitted f",
            }
            log.info("%s: %d iterations of %d, max |diff| vs sequential %.3g (tolerance %g), "
                     "median %.3f s", name, traced.iterations, length,
                     check["max_abs_diff_vs_sequential"], check["exact_match_tolerance"],
                     timing.median_s)
            if not check["exact_match"]:
                log.error("%s does not match sequential within %g", name, check["exact_match_tolerance"])
            write_trace(outputs[name]["trace"], error=traced.error, change=traced.change,
                        error_mean=traced.error.mean(axis=1), error_std=traced.error.std(axis=1),
                        change_mean=traced.change.mean(axis=1), change_std=traced.change.std(axis=1),
                        images=traced.images)
            records.append(write_metrics(outputs[name]["metrics"], record))
    return records


def _image_shape(path) -> tuple[int, int, int]:
    from ffsolve.data import load_prepared

    images = load_prepared(path).test_images
    return tuple(images.shape[1:]) if images.ndim == 4 else tuple(images.shape[1:]) + (1,)
