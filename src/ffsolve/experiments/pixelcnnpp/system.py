"""The PixelCNN++ sampling map and every way this package solves it, each returning a SolveResult.

With the noise drawn up front (paper §1.3), sampling is the triangular map
``f(x) = sample(model(x), noise)`` over the T = H·W pixel positions in raster order: the pixel at
position t depends only on pixels < t. Its fixed point is the sequential sample. Images are
flattened to ``(B, T, C)`` and solved along axis 1; every method returns its sample in that shape
(a device array), so the harness compares them directly.

- ``sequential``, ``jacobi``, ``gs_jacobi``, ``jacobi_gs``: :func:`ffsolve.solve` on that map with a
  jitted full-image ``f`` (a Python loop around one compiled forward pass, stopping as soon as the
  solver's rule is met). Each call of ``f`` is one full network pass.
- ``suffix_jacobi``, ``sliding_jacobi`` (the library's frontier Jacobi): :func:`ffsolve.solve` on
  the same map with its window (:class:`RowBandWindow`): each step recomputes only the image rows
  from the frontier row on (to the bottom, or to the window's end), reading the rows above from the
  row-band cache, and ``network_evaluations`` counts those bands' share of a full pass.
- ``sequential_cache``: T steps through the per-pixel activation cache
  (:mod:`ffsolve.experiments.pixelcnnpp.pixel_cache`, as in Ramachandran et al. 2017): each step
  computes every layer at one position (the down-shifted stream a row at a time, when a row
  starts), so a whole sample costs one forward pass of work. It keeps only the rows each layer
  needs (``pixel_cache.RasterCache``), and the whole sample is one compiled loop. The stronger
  cached baseline.
- ``sequential_band_cache``: T steps, each recomputing a band of rows around the current pixel
  through the model's row-band cache (:mod:`ffsolve.experiments.pixelcnnpp.model`); kept beside
  the per-pixel one so the two baselines are measured in one process.
- ``gs_jacobi_cache`` (beyond the original): a window of at most ``block_size`` positions, starting
  at each sample's first inexact position, updated by Jacobi; rows above the window are final, so
  their activations come from the row-band cache and only the window's rows are recomputed. Each
  sample advances on its own; the run stops when every sample is exact.
- ``jacobi_gs_cache``: Jacobi-GS through the per-pixel cache. Each sweep opens with one full pass
  on the current image (it refills the cache and writes position 0 of every block); step k of the
  sweep then writes position k of every block at once, each block computing its one position per
  layer in one shared cache. Blocks write distinct positions; a block reads what the blocks before
  it have written so far in the sweep, which changes the iterates, not the fixed point, and the
  exact-prefix bookkeeping holds because the first inexact block reads only final values.
- ``jacobi_gs_band_cache``: the same sweeps through the row-band cache: each block recomputes the
  rows it spans (a band, vmapped over blocks) and reads the rows above from the cache filled at
  the sweep's start (one read-only cache per sweep; the original kept one cache per block).
  Summed over the blocks the bands cover every row at least once, so a step costs at least one
  full pass (``network_evaluations`` says how much).

The cached paths run as one ``jax.lax.while_loop`` (timed). Their traced twins call the *same*
compiled loop with a step limit one higher each call, recording every iterate in between: the same
executable on the same state, so the traced images and step count are those of the timed call,
bit for bit (the harness checks it).

The cached paths compute the same function as ``f`` on differently shaped arrays (a band of rows),
so float rounding differs and they match ``sequential`` within :func:`cached_tolerance`, not bit for
bit; the uncached methods call the same compiled ``f`` and are bitwise equal.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

import ffsolve
from ffsolve.experiments.pixelcnnpp import mixture, pixel_cache
from ffsolve.experiments.pixelcnnpp.layout import BLOCKED  # their block_size is in positions
from ffsolve.experiments.pixelcnnpp.model import SCALES, PixelCNNPP, band_rows
from ffsolve.kit import Candidate, Tolerance
from ffsolve import SolveResult

Array = Any
SOLVE_METHODS = ("sequential", "jacobi", "gs_jacobi", "jacobi_gs", "suffix_jacobi", "sliding_jacobi")
CACHED_METHODS = ("sequential_cache", "gs_jacobi_cache", "jacobi_gs_cache",
                  "sequential_band_cache", "jacobi_gs_band_cache")
# ffsolve.solve methods that call the map's window (RowBandWindow): bands through the cache, so
# held to cached_tolerance like the cached paths.
WINDOWED_METHODS = ("suffix_jacobi", "sliding_jacobi")
METHODS = SOLVE_METHODS + CACHED_METHODS
FLOAT32_EPS = float(np.finfo(np.float32).eps)


# -- work accounting ----------------------------------------------------------------------------
def layers_per_scale(nr_resnet: int) -> dict[int, int]:
    """Convolution-like layers (convs, transposed convs, the head) that run at each resolution.

    Scale 1: three input convs, nr up and nr + 1 down gated resnet pairs (four convs each), a
    transposed conv per stream and the head; scale 2: a stride-2 conv and a transposed conv per
    stream, nr up and nr + 1 down pairs; scale 4: a stride-2 conv per stream, nr up and nr down pairs.
    """
    nr = nr_resnet
    return {1: 3 + 4 * nr + 2 + 4 * (nr + 1) + 1, 2: 2 + 4 * nr + 2 + 4 * (nr + 1), 4: 2 + 8 * nr}


def full_units(height: int, width: int, nr_resnet: int) -> int:
    """The work of one full pass in layer-positions: every layer at every position of its scale."""
    layers = layers_per_scale(nr_resnet)
    return sum(layers[s] * (height // s) * (width // s) for s in SCALES)


def band_units(rows: int, height: int, width: int, nr_resnet: int) -> int:
    """Layer-positions a band of ``rows`` full-resolution rows computes: each layer at scale s
    computes ``band_rows(...)[s].size`` rows of ``width / s`` positions."""
    layers = layers_per_scale(nr_resnet)
    sizes = {s: r.size for s, r in band_rows(0, rows, height).items()}
    return sum(layers[s] * sizes[s] * (width // s) for s in SCALES)


def band_share(rows: int, height: int, width: int, nr_resnet: int) -> float:
    """Positions a band of ``rows`` full-resolution rows computes, as a share of one full pass."""
    return band_units(rows, height, width, nr_resnet) / full_units(height, width, nr_resnet)


# -- the tolerance of the cached paths ----------------------------------------------------------
CACHED_FACTOR = 4.0  # each float32 sampler assumed within 2e of the exact sample


def _component_index(model: PixelCNNPP, params, noise: mixture.Noise, flat: Array) -> Array:
    """The mixture component each pixel of ``flat`` (B, T, C) picks (traceable)."""
    mix = mixture.split(model.apply({"params": params}, flat.reshape(noise.value.shape)),
                        noise.value.shape[-1])
    return jnp.argmax(mix.logits + (-jnp.log(-jnp.log(noise.component))), axis=-1)


def float64_sample(model: PixelCNNPP, params, noise: mixture.Noise, start: Array):
    """The fixed point of the sampling map evaluated in float64 (weights, noise and arithmetic),
    ``(B, T, C)``, and the component each pixel picks there: Jacobi from ``start`` (the float32
    sample, already close) in one compiled loop; it reaches the fixed point in at most T + 1
    calls from any start."""
    with jax.enable_x64(True):
        params64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        noise64 = mixture.Noise(*(jnp.asarray(a, jnp.float64) for a in noise))
        shape = noise64.value.shape

        def f(flat):
            out = model.apply({"params": params64}, flat.reshape(shape))
            return mixture.sample(out, noise64).reshape(flat.shape)

        @jax.jit
        def solve(x):
            def step(state):
                x, _, calls = state
                new = f(x)
                return new, jnp.any(new != x), calls + 1
            x, _, _ = jax.lax.while_loop(lambda s: s[1] & (s[2] <= x.shape[1]), step,
                                         (x, jnp.bool_(True), jnp.int32(0)))
            return x, _component_index(model, params64, noise64, x)

        x, choice = solve(jnp.asarray(start, jnp.float64))
        return np.asarray(x), np.asarray(choice)


def cached_tolerance(model: PixelCNNPP, params=None, noise: Optional[mixture.Noise] = None,
                     factor: float = CACHED_FACTOR, sample: Optional[Array] = None) -> Tolerance:
    """The closeness to ``sequential`` the cached samplers are held to.

    With the weights and the noise (as the experiment declares it): the float32 sample's own error
    against a float64 evaluation of the same sampling map, measured, times ``factor``. The float32
    sample (``ffsolve.solve``'s Jacobi, bit for bit ``sequential``'s) and the map's fixed point in
    float64 (:func:`float64_sample`) give e = max |x32 − x64|, rounding carried along the raster
    chain included. A cached sampler computes the same pixels in float32 on other shapes (another
    summation order); assuming each float32 sampler within 2 e of the exact sample (measured on the
    embedded default: the cached ones within 1.2 e), the triangle inequality gives

        |x_cached − x_sequential| <= 4 e.

    Pixels where float32 and float64 pick another mixture component (a Gumbel-max margin below
    rounding; after it the chain differs by O(1)) end each sample's measured stretch: e is taken
    over the pixels before its first flip, and such a flip between two float32 samplers fails the
    bound honestly (the record counts component flips). e is floored at u32 (pixels lie in
    [-1, 1]). Costs one float32 Jacobi solve (none when ``sample``, the float32 sequential sample
    ``(B, T, C)``, is given) and a float64 one started from its answer.

    Without weights and noise there is nothing to measure: an a-priori estimate for a network's
    raw outputs, depth · sqrt(K) · eps · (1 + max|logit(u)|) (K = 2·3·2·nr_filters terms per sum),
    which the unit tests of the cache use.
    """
    if params is None or noise is None:
        return _a_priori_tolerance(model)
    if sample is None:
        sample = Sampler(model, params, noise).run("jacobi").x
    x32 = np.asarray(sample)
    x64, choice64 = float64_sample(model, params, noise, x32)
    choice32 = np.asarray(jax.jit(lambda flat: _component_index(model, params, noise, flat))(x32))
    batch = x32.shape[0]
    flips = (choice32 != choice64).reshape(batch, -1)
    first = np.where(flips.any(axis=1), flips.argmax(axis=1), flips.shape[1])  # per sample
    kept = np.arange(flips.shape[1])[None, :] < first[:, None]  # (B, T)
    diff = np.abs(x32.astype(np.float64) - x64).max(axis=-1)  # (B, T)
    error = float(diff[kept].max()) if kept.any() else 0.0
    floor = FLOAT32_EPS / 2
    atol = factor * max(error, floor)
    why = (
        "The cached samplers evaluate the network on bands of rows or on one position's window "
        "per layer, not on the whole image, so XLA picks other kernels and sums in another "
        "order: bit-for-bit equality with sequential cannot hold. Derived from the float32 "
        "sample's own error against the same sampling map's fixed point in float64 (weights, "
        f"noise and arithmetic; {batch} samples of {flips.shape[1]} pixels): e = max|x32 - x64| "
        f"= {error:.3g} in [-1, 1] pixel units (floored at u32 = {floor:.3g}), times {factor:g}: "
        "each float32 sampler assumed within 2e of the exact sample, so two differ by at most "
        f"4e (triangle inequality). {int(flips.sum())} pixel(s) picked another mixture component "
        "in float64 than in float32 (e is taken over each sample's pixels before its first such "
        "flip). A tiny change of the component logits can flip the mixture component "
        "argmax(logits + Gumbel noise) where two are within the rounding error; that pixel (and "
        "those after it) then differ by O(1) and the bound fails honestly: the record counts such "
        "pixels in component_flips and gives the reference's smallest Gumbel-max margin."
    )
    return Tolerance(atol=atol, rtol=0.0, why=why)


def _a_priori_tolerance(model: PixelCNNPP) -> Tolerance:
    """depth · sqrt(K) · eps relative error of the mixture parameters, times (1 + max|logit(u)|):
    an estimate without measurement, for a network's raw outputs (see :func:`cached_tolerance`)."""
    # Longest path: input conv, then per gated resnet two convs, up (3·nr) and down (3·nr + 2),
    # two stride-2 convs, two transposed convs, and the head.
    depth = 1 + 2 * (3 * model.nr_resnet) + 2 * (3 * model.nr_resnet + 2) + 2 + 2 + 1
    terms = 2 * 3 * 2 * model.nr_filters
    logistic = math.log((1 - mixture.NOISE_EPS) / mixture.NOISE_EPS)
    atol = depth * math.sqrt(terms) * FLOAT32_EPS * (1.0 + logistic)
    why = (
        "an a-priori estimate without weights or noise to measure: depth "
        f"{depth} conv layers × sqrt(K = {terms} terms per sum) × float32 eps {FLOAT32_EPS:.3g} "
        f"relative error of the mixture parameters, times (1 + max|logit(u)| = {1 + logistic:.1f}) "
        f"for the logistic noise the scale multiplies: atol {atol:.3g}. Loose (about 100 times the "
        "differences seen); the experiments declare the measured tolerance instead"
    )
    return Tolerance(atol=atol, rtol=0.0, why=why)


def component_choices(model: PixelCNNPP, params, noise: mixture.Noise, flat: Array):
    """The mixture component each pixel of ``flat`` (B, T, C) picks, and its Gumbel-max margin
    (best minus second best of logits + Gumbel noise), from one full pass on ``flat``."""
    choice, margin = _component_choices(model, params, noise, flat)
    return np.asarray(choice), np.asarray(margin)


@partial(jax.jit, static_argnums=0)
def _component_choices(model: PixelCNNPP, params, noise: mixture.Noise, flat: Array):
    # Compiled once per model and shapes: run op by op, the pass compiled each of its ~150
    # operations on every call (the measure job's work after its timing took 5.6 s that way,
    # 2.4 s compiled: the rule run alone, before and after, its log's timestamps).
    images = jnp.reshape(flat, noise.value.shape)
    mix = mixture.split(model.apply({"params": params}, images), noise.value.shape[-1])
    scores = mix.logits + (-jnp.log(-jnp.log(noise.component)))
    top = jnp.sort(scores, axis=-1)
    margin = top[..., -1] - top[..., -2] if scores.shape[-1] > 1 else jnp.full(top.shape[:-1], jnp.inf)
    return jnp.argmax(scores, axis=-1), margin


# -- the sampler --------------------------------------------------------------------------------
class Sampler:
    """Samples ``model`` with ``params`` from ``noise`` (images ``(B, H, W, C)``) by any method.

    Compiled functions are built once per sampler and reused, so timed calls measure sampling,
    not compilation (the first call of each method compiles: the harness's warm-up).
    """

    def __init__(self, model: PixelCNNPP, params, noise: mixture.Noise):
        self.model, self.params, self.noise = model, params, noise
        self.shape = tuple(noise.value.shape)
        _, self.height, self.width, self.channels = self.shape
        self.length = self.height * self.width
        self.window = RowBandWindow(self)
        # Bands sum in another order than the full pass: not bitwise, so ``sequential`` keeps
        # calling the full map and stays the reference.
        self.f = ffsolve.windowed(jax.jit(self._full_map), self.window, self.window.cost,
                                  bitwise=False)
        self.layers = pixel_cache.network_layers(params, model.nr_resnet)
        self.raster = pixel_cache.RasterCache(self.layers, self.shape, model.nr_resnet,
                                              model.nr_filters)
        self.full_units = full_units(self.height, self.width, model.nr_resnet)
        self._compiled: dict = {}
        self._tolerance: Optional[Tolerance] = None

    def tolerance(self) -> Tolerance:
        """:func:`cached_tolerance` measured for this sampler's weights and noise (once)."""
        if self._tolerance is None:
            self._tolerance = cached_tolerance(self.model, self.params, self.noise,
                                               sample=self.run("jacobi").x)
        return self._tolerance

    def _full_map(self, flat: Array) -> Array:
        """f: (B, T, C) -> (B, T, C); output t depends only on input positions < t."""
        images = flat.reshape(self.shape)
        params = self.model.apply({"params": self.params}, images)
        return mixture.sample(params, self.noise).reshape(flat.shape)

    def initial(self) -> Array:
        """The initial guess of every method: zeros, as in the original."""
        return jnp.zeros((self.shape[0], self.length, self.channels), jnp.float32)

    # -- any method ----------------------------------------------------------------------------
    def run(self, method: str, block_size: Optional[int] = None, tol: float = 0.0,
            trace: bool = False, deadline: Optional[float] = None):
        """Sample with ``method``; returns a :class:`SolveResult` (and, with ``trace``, also the
        per-iteration arrays: ``(result, arrays)``). ``deadline`` (a ``time.perf_counter()``
        value) stops an ``ffsolve.solve`` method after the step in progress; the cached paths,
        one compiled loop each, run to the end."""
        if method not in METHODS:
            raise ValueError(f"pixelcnnpp method must be one of {list(METHODS)}, got {method!r}")
        if (method in BLOCKED) != (block_size is not None):
            raise ValueError(f"method {method!r} {'needs a' if method in BLOCKED else 'takes no'} "
                             "block size (positions per block)")
        if block_size is not None and not 1 <= block_size <= self.length:
            raise ValueError(f"a block of {block_size} positions does not fit {self.length} "
                             f"positions ({self.height}x{self.width} images)")
        if method in CACHED_METHODS:
            return self._cached(method, block_size, tol, trace)
        result = ffsolve.solve(self.f, self.initial(), method=method, block_size=block_size, tol=tol,
                               axis=1, trace=trace, trace_batch_axis=0 if trace else None,
                               deadline=deadline)
        if not trace:
            return result
        images = np.asarray(result.x).reshape(self.shape)
        return result, trace_arrays(result.trace.error, result.trace.change, images)

    # -- the activation cache ------------------------------------------------------------------
    def _empty_cache(self, batch: int):
        """A zero cache of the right structure (what the band steps fill before reading it)."""
        images = jnp.zeros((batch,) + self.shape[1:], jnp.float32)
        shapes = jax.eval_shape(
            lambda x: self.model.apply({"params": self.params}, x, band=(0, self.height),
                                       mutable=["cache"])[1]["cache"], images)
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def _band(self, images, cache, start, height):
        """Mixture parameters of rows [start, start+height) recomputed through the cache."""
        out, variables = self.model.apply({"params": self.params, "cache": cache}, images,
                                          band=(start, height), mutable=["cache"])
        first = band_rows(start, height, self.height)[1].start
        return jax.lax.dynamic_slice_in_dim(out, start - first, height, axis=1), variables["cache"]

    # sequential_cache: state (images, cache, t); step t writes pixel t from its band of one row.
    def _sequential_init(self):
        images = jnp.zeros(self.shape, jnp.float32)
        return images, self._empty_cache(self.shape[0]), jnp.int32(0)

    def _sequential_step(self, state, noise):
        images, cache, t = state
        row, col = t // self.width, t % self.width
        params, cache = self._band(images, cache, row, 1)
        pixel = lambda a: jax.lax.dynamic_slice_in_dim(a, col, 1, axis=2)  # noqa: E731
        noise_here = mixture.Noise(
            *(pixel(jax.lax.dynamic_slice_in_dim(a, row, 1, axis=1)) for a in noise))
        value = mixture.sample(pixel(params), noise_here)
        images = jax.lax.dynamic_update_slice(images, value, (0, row, col, 0))
        return images, cache, t + 1

    def _sequential_done(self, state):
        return state[2] >= self.length

    # sequential_cache: state (images, cache, t, work); step t computes pixel t through the
    # per-pixel cache for raster order (pixel_cache.RasterCache: two rows per layer), each layer
    # at one position (a row of the u stream, and the ul taps on the row above, when t starts a
    # row). The jacobi_gs_cache path, many positions a step, keeps full maps (_empty_pixel_cache).
    def _empty_pixel_cache(self):
        m = self.model
        return pixel_cache.empty_cache(self.shape[0], self.height, self.width, m.nr_resnet,
                                       m.nr_filters)

    def _pixel_init(self):
        images = jnp.zeros(self.shape, jnp.float32)
        return images, self.raster.init(), jnp.int32(0), jnp.int32(0)

    def _pixel_step(self, state, noise, read=None):
        """Pixel t from the network at raster position ``read`` (t unless a test says otherwise)."""
        images, cache, t, work = state
        row, col = t // self.width, t % self.width
        cache, params, done = self.raster.position(cache, images, t if read is None else read)
        value = mixture.sample(params, mixture.Noise(*(a[:, row, col] for a in noise)))
        images = jax.lax.dynamic_update_slice(images, value[:, None, None, :], (0, row, col, 0))
        return images, cache, t + 1, work + done

    # gs_jacobi_cache: state (images, cache, exact, per-sample steps, steps); per sample on its own.
    def _gs_jacobi_init(self):
        images = jnp.zeros(self.shape, jnp.float32)
        cache = jax.vmap(lambda _: self._empty_cache(1))(jnp.arange(self.shape[0]))
        zeros = jnp.zeros(self.shape[0], jnp.int32)
        return images, cache, zeros, zeros, jnp.int32(0)

    def _gs_jacobi_step_fn(self, block: int, tol: float):
        h, w, c = self.height, self.width, self.channels
        rows = min(h, -(-block // w))  # the window's rows: enough for a block starting a row
        positions = jnp.arange(rows * w)

        def one(images, cache, exact, noise):
            """One Jacobi update of one sample's window; ``exact`` = its exact prefix (pixels)."""
            start = jnp.minimum(exact // w, h - rows)
            params, cache = self._band(images[None], cache, start, rows)
            window_noise = mixture.Noise(
                *(jax.lax.dynamic_slice_in_dim(a[None], start, rows, axis=1) for a in noise))
            new = mixture.sample(params, window_noise)[0]
            old = jax.lax.dynamic_slice_in_dim(images, start, rows, axis=0)
            pos = start * w + positions
            end = jnp.minimum(exact + block, (start + rows) * w)  # at most `block` positions
            open_ = (pos >= exact) & (pos < end)  # positions before `exact` are final
            new = jnp.where(open_.reshape(rows, w, 1), new, old)
            moved = (jnp.abs(new - old).reshape(rows * w, c).max(axis=1) > tol) & open_
            # The leading unmoved positions were fixed points given an exact prefix, so they are
            # exact; the first moved one was just computed from an exact prefix, so it is too.
            reached = jnp.where(moved.any(), pos[jnp.argmax(moved)] + 1, end)
            exact = jnp.minimum(jnp.maximum(exact + 1, reached), h * w)
            return jax.lax.dynamic_update_slice_in_dim(images, new, start, axis=0), cache, exact

        batched = jax.vmap(one, in_axes=(0, 0, 0, 0))

        def step(state, noise):
            images, cache, exact, per_sample, steps = state
            active = exact < h * w
            images, cache, exact = batched(images, cache, exact, noise)
            return images, cache, exact, per_sample + active.astype(jnp.int32), steps + 1

        return step

    def _gs_jacobi_done(self, state):
        return jnp.all(state[2] >= self.length)

    # jacobi_gs_cache: state (images, cache, base, reached, moved, k, steps, full passes, work).
    # ``base`` (per sample) is the exact prefix when the sweep began (a multiple of the block),
    # ``reached`` the exact prefix now, ``moved`` (per sample and block) whether a block's values
    # changed by more than ``tol`` in this sweep, ``k`` the step within the sweep.
    def _jacobi_gs_geometry(self, block: int):
        """Blocks, the rows a block's band covers (the most any block spans), each band's start."""
        firsts = np.arange(-(-self.length // block)) * block
        lasts = np.minimum(firsts + block, self.length) - 1
        span = int((lasts // self.width - firsts // self.width).max()) + 1
        return firsts, lasts, span, np.minimum(firsts // self.width, self.height - span)

    def _jacobi_gs_init(self, block: int, pixel: bool):
        def init():
            batch, blocks = self.shape[0], -(-self.length // block)
            zeros = jnp.zeros(batch, jnp.int32)
            cache = self._empty_pixel_cache() if pixel else self._empty_cache(batch)
            return (jnp.zeros(self.shape, jnp.float32), cache, zeros, zeros,
                    jnp.zeros((batch, blocks), bool), jnp.int32(0), jnp.int32(0), jnp.int32(0),
                    jnp.int32(0))
        return init

    def _jacobi_gs_step_fn(self, block: int, tol: float, pixel: bool):
        b_, h, w, c = self.shape
        length = self.length
        firsts, lasts, span, starts = self._jacobi_gs_geometry(block)
        firsts, lasts, starts = jnp.asarray(firsts), jnp.asarray(lasts), jnp.asarray(starts)
        blocks = firsts.shape[0]

        def flat_noise(noise):  # (B, H, W, K) -> (B, T, K)
            return mixture.Noise(*(a.reshape(b_, length, a.shape[-1]) for a in noise))

        bands = int(blocks) * band_units(span, h, w, self.model.nr_resnet)

        def full_pass(images, cache, noise, pos):
            if pixel:
                cache, out = pixel_cache.fill(self.layers, cache, images)
            else:
                out, variables = self.model.apply({"params": self.params}, images, band=(0, h),
                                                  mutable=["cache"])
                cache = variables["cache"]
            new = mixture.sample(out, noise).reshape(b_, length, c)
            return new[:, pos], cache, jnp.int32(self.full_units)

        def band_pass(images, cache, noise, pos):
            def one(start):
                return self._band(images, cache, start, span)[0]  # (B, span, W, out)
            rows = jax.vmap(one)(starts)  # (blocks, B, span, W, out)
            params = rows[jnp.arange(blocks), :, pos // w - starts, pos % w]  # (blocks, B, out)
            noise_here = mixture.Noise(*(a[:, pos] for a in flat_noise(noise)))
            return mixture.sample(jnp.swapaxes(params, 0, 1), noise_here), cache, jnp.int32(bands)

        def pixel_pass(images, cache, noise, pos):
            # One position per block through the shared per-pixel cache: blocks write distinct
            # positions, and each reads what the others have written so far in this sweep.
            cache, params, work = pixel_cache.positions_step(self.layers, cache, images, pos)
            noise_here = mixture.Noise(*(a[:, pos] for a in flat_noise(noise)))
            return mixture.sample(jnp.swapaxes(params, 0, 1), noise_here), cache, work

        def step(state, noise):
            images, cache, base, reached, moved, k, steps, fulls, work = state
            pos = jnp.minimum(firsts + k, lasts)  # a finished (short last) block rewrites its end
            valid = firsts + k <= lasts
            new, cache, done = jax.lax.cond(k == 0, full_pass, pixel_pass if pixel else band_pass,
                                            images, cache, noise, pos)
            flat = images.reshape(b_, length, c)
            old = flat[:, pos]
            new = jnp.where(valid[None, :, None], new, old)
            images = flat.at[:, pos].set(new).reshape(self.shape)
            moved = moved | (jnp.abs(new - old).max(axis=-1) > tol)
            # Position base + k (in the first inexact block) was computed from an exact prefix.
            reached = jnp.maximum(reached, jnp.minimum(base + k + 1, length))
            end = k + 1 >= block
            # At the sweep's end the first inexact block is exact, and so is every block after it
            # up to and including the first one that moved: its inputs did not change.
            after = jnp.arange(blocks)[None, :] >= (base // block)[:, None]
            first_moved = jnp.where((moved & after).any(axis=1), jnp.argmax(moved & after, axis=1),
                                    blocks - 1)
            chained = jnp.minimum((first_moved + 1) * block, length).astype(jnp.int32)
            reached = jnp.where(end, jnp.maximum(reached, chained), reached)
            base = jnp.where(end, reached - reached % block, base)
            moved = jnp.where(end, False, moved)
            return (images, cache, base, reached, moved, jnp.where(end, 0, k + 1), steps + 1,
                    fulls + (k == 0).astype(jnp.int32), work + done)

        return step

    def _jacobi_gs_done(self, state):
        return jnp.all(state[3] >= self.length)

    def _compiled_loop(self, method: str, block: Optional[int], tol: float):
        """(init, loop): ``loop(state, noise, stop)`` runs steps until done or ``stop`` steps."""
        key = (method, block, tol)
        if key not in self._compiled:
            if method == "sequential_cache":
                init, step, done, count = (self._pixel_init, self._pixel_step,
                                           self._sequential_done, lambda s: s[2])
            elif method == "sequential_band_cache":
                init, step, done, count = (self._sequential_init, self._sequential_step,
                                           self._sequential_done, lambda s: s[2])
            elif method in ("jacobi_gs_cache", "jacobi_gs_band_cache"):
                pixel = method == "jacobi_gs_cache"
                init, step, done, count = (self._jacobi_gs_init(block, pixel),
                                           self._jacobi_gs_step_fn(block, tol, pixel),
                                           self._jacobi_gs_done, lambda s: s[6])
            else:
                init, step, done, count = (self._gs_jacobi_init, self._gs_jacobi_step_fn(block, tol),
                                           self._gs_jacobi_done, lambda s: s[4])

            def loop(state, noise, stop):
                return jax.lax.while_loop(lambda s: (count(s) < stop) & ~done(s),
                                          lambda s: step(s, noise), state)

            self._compiled[key] = (jax.jit(init), jax.jit(loop), count)
        return self._compiled[key]

    def _cached(self, method: str, block: Optional[int], tol: float, trace: bool):
        init, loop, count = self._compiled_loop(method, block, tol)
        nr = self.model.nr_resnet
        counted = None  # where the loop counts its work (layer-positions), if it does
        if method == "sequential_cache":
            done, counted = self._sequential_done, 3
        elif method == "sequential_band_cache":
            done, band = self._sequential_done, band_share(1, self.height, self.width, nr)
        elif method in ("jacobi_gs_cache", "jacobi_gs_band_cache"):
            done, counted = self._jacobi_gs_done, 8
        else:
            rows = min(self.height, -(-block // self.width))
            done, band = self._gs_jacobi_done, band_share(rows, self.height, self.width, nr)
        state = init()
        if not trace:
            state = loop(state, self.noise, jnp.int32(self.length))
            iterates = changes = None
        else:
            iterates, changes = [np.asarray(state[0])], []
            while not bool(done(state)):
                if len(changes) >= self.length:  # the triangular argument forbids this
                    raise RuntimeError(f"{method} exceeded T = {self.length} steps")
                state = loop(state, self.noise, count(state) + 1)
                iterates.append(np.asarray(state[0]))
                changes.append(np.linalg.norm(
                    (iterates[-1].astype(np.float64) - iterates[-2]).reshape(self.shape[0], -1), axis=1))
        steps = int(count(state))
        converged = bool(done(state))
        evaluations = (int(state[counted]) / self.full_units if counted is not None
                       else steps * band)
        result = SolveResult(
            x=state[0].reshape(self.shape[0], self.length, self.channels), iterations=steps,
            converged=converged, method=method, block_size=block, tol=tol,
            sequence_length=self.length, network_evaluations=evaluations,
        )
        if not trace:
            return result
        stacked = np.stack(iterates).reshape(len(iterates), self.shape[0], -1).astype(np.float64)
        error = np.sqrt(((stacked - stacked[-1]) ** 2).sum(axis=2))
        arrays = trace_arrays(error, np.stack(changes), iterates[-1])
        if method == "gs_jacobi_cache":
            arrays["per_sample_iterations"] = np.asarray(state[3])
        return result, arrays


class RowBandWindow:
    """The window evaluator of the sampling map (``ffsolve.windowed``'s contract): the outputs at
    positions [start, stop) from the rows holding them, recomputed through the row-band cache.

    The library's frontier methods call it with a non-decreasing ``start``, each window beginning
    at or before the previous one's end, and positions < ``start`` final. So every row above the
    band was last computed by an earlier call from inputs that are final where it reads them (a
    row is left behind only once the positions through it stopped moving), which is what the band
    needs from the cache (:func:`~ffsolve.experiments.pixelcnnpp.model.band_rows`; the same
    argument as ``gs_jacobi_cache``'s). A call with ``start == 0`` begins a solve: a fresh cache.

    Band heights are static (one compiled band per height): a window that ends inside the image
    (``sliding_jacobi``'s) takes exactly the rows it spans (two heights for a fixed width); one to
    the image's end (``suffix_jacobi``'s, every step a new length) takes the smallest height of the
    ladder H/4, H/2, H (rounded up) that holds it, moved up to end at the image's bottom: at most
    three programs, at most twice the rows needed (the rows above ``start`` it recomputes are final).
    """

    def __init__(self, sampler: "Sampler"):
        self.sampler = sampler
        self._cache = None
        self._empty = None
        self._bands: dict = {}

    def rows(self, start: int, stop: int) -> tuple[int, int]:
        """(first row, band height) of the window [start, stop)."""
        s = self.sampler
        first, last = start // s.width, (stop - 1) // s.width
        height = last - first + 1
        if stop >= s.length:
            height = min(h for h in (-(-s.height // 4), -(-s.height // 2), s.height) if h >= height)
        return min(first, s.height - height), height

    def cost(self, start: int, stop: int) -> float:
        """The window's work in full passes: its band's share (:func:`band_share`)."""
        s = self.sampler
        return band_share(self.rows(start, stop)[1], s.height, s.width, s.model.nr_resnet)

    def _band(self, height: int):
        if height not in self._bands:
            s = self.sampler

            def band(flat, cache, first):
                params, cache = s._band(flat.reshape(s.shape), cache, first, height)
                noise = mixture.Noise(
                    *(jax.lax.dynamic_slice_in_dim(a, first, height, axis=1) for a in s.noise))
                new = mixture.sample(params, noise)
                return new.reshape(s.shape[0], height * s.width, s.channels), cache

            self._bands[height] = jax.jit(band)
        return self._bands[height]

    def __call__(self, x, start: int, stop: int):
        s = self.sampler
        if not 0 <= start < stop <= s.length:
            raise ValueError(f"window [{start}, {stop}) is not inside {s.length} positions")
        if start == 0 or self._cache is None:
            if self._empty is None:
                self._empty = s._empty_cache(s.shape[0])
            self._cache = self._empty
        first, height = self.rows(start, stop)
        out, self._cache = self._band(height)(x, self._cache, jnp.int32(first))
        offset = start - first * s.width
        return out[:, offset:offset + stop - start]


def trace_arrays(error: np.ndarray, change: np.ndarray, images: np.ndarray) -> dict:
    """What ``trace.npz`` holds: per-iteration L2 error to the final iterate and L2 change, per
    sample and as mean/std over the batch, and the final images (the sample grid)."""
    error, change = np.asarray(error, np.float64), np.asarray(change, np.float64)
    return {"error": error, "change": change,
            "error_mean": error.mean(axis=1), "error_std": error.std(axis=1),
            "change_mean": change.mean(axis=1), "change_std": change.std(axis=1),
            "images": np.asarray(images)}


def candidates(sampler: Sampler, runs, tol: float, extra: Optional[dict] = None) -> list[Candidate]:
    """One harness candidate per run (a :class:`ffsolve.kit.RunSpec`): the timed program, its traced
    twin, and for the cached paths their tolerance (measured once per sampler)."""
    runs = list(runs)
    banded = CACHED_METHODS + WINDOWED_METHODS  # held to cached_tolerance
    tolerance = sampler.tolerance() if any(s.method in banded for s in runs) else None
    out = []
    for spec in runs:
        cached = spec.method in CACHED_METHODS
        if cached:  # one compiled loop: no deadline between its steps
            def program(spec=spec):
                return sampler.run(spec.method, spec.block_size, tol)
        else:  # auto's pilot may stop it after the step in progress
            def program(spec=spec, deadline=None):
                return sampler.run(spec.method, spec.block_size, tol, deadline=deadline)

        def traced(spec=spec):
            return sampler.run(spec.method, spec.block_size, tol, trace=True)

        loop = "jax.lax.while_loop" if cached else "python loop around jitted f (ffsolve.solve)"
        # The traced twin runs the program's own compiled code (the cached loop's executable, or
        # the same jitted f under ffsolve.solve), so it is the first warm-up call.
        out.append(Candidate(spec, program, traced, tolerance if spec.method in banded else None,
                             extra={**(extra or {}), "loop": loop}, traced_warms_up=True))
    return out


def contract_candidates():
    """A tiny instance for the contract test: a random-init 8×8 grey PixelCNN++ (1 resnet, 8
    filters, 3 components), two images; every ffsolve method and the three cached paths, the block
    methods at 12 positions (one and a half rows: not a whole number of rows)."""
    from ffsolve.kit import RunSpec

    model = PixelCNNPP(nr_resnet=1, nr_filters=8, nr_logistic_mix=3)
    shape = (2, 8, 8, 1)
    params = model.init(jax.random.PRNGKey(1), jnp.zeros(shape))["params"]
    noise = mixture.draw_noise(jax.random.PRNGKey(7), shape, 3)
    sampler = Sampler(model, params, noise)
    runs = [RunSpec(m, 12 if m in BLOCKED else None) for m in METHODS]
    return candidates(sampler, runs, tol=0.0)
