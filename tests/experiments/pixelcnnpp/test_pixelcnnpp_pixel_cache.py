"""The per-pixel activation cache (ffsolve.experiments.pixelcnnpp.pixel_cache) computes the
model's function: teacher-forced one position at a time, filled all at once, or several positions
per step; and it does one forward pass of work over a whole sequential sample. The same for the
sequential sampler's raster-order cache (RasterCache), which keeps two rows per layer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ffsolve.experiments.pixelcnnpp import pixel_cache
from ffsolve.experiments.pixelcnnpp.model import PixelCNNPP
from ffsolve.experiments.pixelcnnpp.system import cached_tolerance, full_units, layers_per_scale


def instance(nr_resnet: int, channels: int, size: int = 8, batch: int = 2):
    model = PixelCNNPP(nr_resnet=nr_resnet, nr_filters=8, nr_logistic_mix=3)
    shape = (batch, size, size, channels)
    params = model.init(jax.random.PRNGKey(nr_resnet + channels), jnp.zeros(shape))["params"]
    images = jax.random.uniform(jax.random.PRNGKey(5), shape, minval=-1.0, maxval=1.0)
    full = np.asarray(model.apply({"params": params}, images))
    layers = pixel_cache.network_layers(params, nr_resnet)
    cache = pixel_cache.empty_cache(batch, size, size, nr_resnet, model.nr_filters)
    return model, images, full, layers, cache


STEP = jax.jit(pixel_cache.positions_step)  # one compilation per shape, shared by the tests


def teacher_forced(layers, cache, images, positions_per_step: int):
    """The mixture parameters at every position, computed ``positions_per_step`` raster positions
    at a time (each step's positions see the earlier steps' activations), and the work done."""
    b, h, w, _ = images.shape
    step = STEP
    outs, work = [], 0
    for first in range(0, h * w, positions_per_step):
        cache, params, done = step(layers, cache, images, jnp.arange(first, first + positions_per_step))
        outs.append(params)
        work += int(done)
    out = jnp.concatenate(outs)  # (T, B, out)
    return np.asarray(jnp.swapaxes(out, 0, 1).reshape(b, h, w, -1)), work


@pytest.mark.parametrize("nr_resnet,channels", [(1, 1), (2, 3)])
def test_one_position_per_step_computes_the_full_pass(nr_resnet, channels):
    """Every position's output, fed the same image, within the cached paths' float32 tolerance of
    the model's full pass (bitwise equality cannot hold: windows are summed in another order), and
    the work over all positions is exactly one full pass: each layer at each position once."""
    model, images, full, layers, cache = instance(nr_resnet, channels)
    out, work = teacher_forced(layers, cache, images, 1)
    np.testing.assert_allclose(out, full, atol=cached_tolerance(model).atol, rtol=0)
    assert work == full_units(8, 8, nr_resnet)


def test_fill_and_multi_position_steps_compute_the_full_pass():
    """The fill (every position at once) and steps of 8 positions (one row) give the full pass."""
    model, images, full, layers, cache = instance(1, 1)
    filled, out = jax.jit(pixel_cache.fill)(layers, cache, images)
    atol = cached_tolerance(model).atol
    np.testing.assert_allclose(np.asarray(out), full, atol=atol, rtol=0)
    rows, _ = teacher_forced(layers, cache, images, 8)
    np.testing.assert_allclose(rows, full, atol=atol, rtol=0)
    # After the fill, one position recomputed from the filled cache gives its output again.
    _, params, _ = STEP(layers, filled, images, jnp.array([27]))
    np.testing.assert_allclose(np.asarray(params[0]), full[:, 3, 3], atol=atol, rtol=0)


def raster_teacher_forced(layers, images, nr_resnet, nr_filters):
    """Every position's mixture parameters from :class:`pixel_cache.RasterCache`, one position a
    step in raster order, fed ``images`` (B, H, W, C); and the work done."""
    b, h, w, _ = images.shape
    raster = pixel_cache.RasterCache(layers, images.shape, nr_resnet, nr_filters)

    @jax.jit
    def run(images):
        def step(cache, t):
            cache, params, work = raster.position(cache, images, t)
            return cache, (params, work)
        _, (params, work) = jax.lax.scan(step, raster.init(), jnp.arange(h * w))
        return params, work.sum()

    params, work = run(images)  # (T, B, out)
    return np.asarray(jnp.swapaxes(params, 0, 1).reshape(b, h, w, -1)), int(work)


@pytest.mark.parametrize("nr_resnet,channels,size", [(1, 1, 8), (2, 3, 8), (1, 1, 12)])
def test_the_raster_cache_computes_the_full_pass(nr_resnet, channels, size):
    """The sequential sampler's cache (two rows per layer), teacher-forced: every position's output
    within the cached paths' tolerance of the full pass, one full pass of work in all. 12×12 has
    odd rows and columns at the half and quarter resolutions (6×6, 3×3)."""
    model, images, full, layers, _ = instance(nr_resnet, channels, size=size)
    out, work = raster_teacher_forced(layers, images, nr_resnet, model.nr_filters)
    np.testing.assert_allclose(out, full, atol=cached_tolerance(model).atol, rtol=0)
    assert work == full_units(size, size, nr_resnet)


def test_the_raster_cache_reads_no_later_pixel():
    """Pixels from position t on changed: the outputs at positions up to t are unchanged."""
    model, images, _, layers, _ = instance(1, 1)
    t = 27  # row 3, column 3
    later = np.arange(64).reshape(1, 8, 8, 1) >= t
    changed = jnp.where(later, -images, images)
    out, _ = raster_teacher_forced(layers, images, 1, model.nr_filters)
    out2, _ = raster_teacher_forced(layers, changed, 1, model.nr_filters)
    flat, flat2 = out.reshape(2, 64, -1), out2.reshape(2, 64, -1)
    assert np.array_equal(flat[:, :t + 1], flat2[:, :t + 1])
    assert not np.array_equal(flat[:, t + 1:], flat2[:, t + 1:])


def test_the_stream_layer_counts_add_up_to_the_model():
    for nr in (1, 5):
        counts = pixel_cache.stream_layers(nr)
        assert {s: counts["u"][s] + counts["ul"][s] for s in (1, 2, 4)} == layers_per_scale(nr)


def test_a_model_with_other_resnet_counts_is_refused_by_name():
    """Parameters of a 1-resnet model walked as a 2-resnet one: a KeyError naming the module."""
    model = PixelCNNPP(nr_resnet=1, nr_filters=4, nr_logistic_mix=2)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))["params"]
    with pytest.raises(KeyError, match="GatedResnet"):
        pixel_cache.network_layers(params, 2)
