"""The five ways to sample PixelCNN++ from fixed noise, all with the same weights and noise.

With the noise drawn up front (paper §1.3), sampling is the triangular map
``f(x) = sample(model(x), noise)`` over the H·W pixel positions in raster order: the pixel at
position t depends only on pixels < t. Its fixed point is the sequential sample.

- ``sequential``, ``jacobi``, ``gs_jacobi``, ``jacobi_gs``: :func:`ffsolve.solve` on that map with a
  jitted full-image ``f`` (a Python loop around one compiled forward pass; the loop stops as soon as
  the solver's rule is met, checked on the host after each call). Images are flattened to
  ``(B, H·W, C)`` and solved along axis 1; the batch moves in lockstep.
- ``sequential_cache``: one ``jax.lax.fori_loop`` of H·W steps; each step recomputes only a band of
  two rows per resolution through the model's activation cache (:mod:`ffsolve.models.pixelcnnpp`).
- ``gs_jacobi_cache`` (beyond the original): a window of rows updated by Jacobi, starting at each
  sample's first inexact row; rows above it are final, so their activations come from the cache and
  only the window is recomputed. Each sample advances on its own. One ``jax.lax.while_loop`` that
  stops when every sample is exact (a Python loop around the same jitted step records traces).

The cached samplers compute the same mathematical function on differently shaped arrays, so their
results match ``sequential`` up to float rounding (see ``exact_match_tolerance``), not bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

import ffsolve
from ffsolve.models import pixelcnnpp_mixture as mixture
from ffsolve.models.pixelcnnpp import PixelCNNPP, band_rows

Array = Any
SOLVE_METHODS = ("sequential", "jacobi", "gs_jacobi", "jacobi_gs")
CACHED_METHODS = ("sequential_cache", "gs_jacobi_cache")
METHODS = SOLVE_METHODS + CACHED_METHODS
BLOCK_METHODS = ("gs_jacobi", "jacobi_gs", "gs_jacobi_cache")  # their block is a number of rows


@dataclass
class Outcome:
    """One sampler's result: images ``(B, H, W, C)``, parallel steps, and optional trace arrays."""

    images: np.ndarray
    iterations: int
    converged: bool
    per_sample_iterations: Optional[np.ndarray] = None
    error: Optional[np.ndarray] = None  # (iterations + 1, B): L2 distance to the final iterate
    change: Optional[np.ndarray] = None  # (iterations, B): L2 norm of each update


class Sampler:
    """Samples ``model`` with ``params`` from ``noise`` (shape ``(B, H, W, C)``) by any method.

    Compiled functions are built once per sampler and reused, so a timing loop measures sampling,
    not compilation (the first call of each method compiles).
    """

    def __init__(self, model: PixelCNNPP, params, noise: mixture.Noise):
        self.model, self.params, self.noise = model, params, noise
        self.shape = tuple(noise.value.shape)
        b, h, w, c = self.shape
        self.length = h * w
        self._f = jax.jit(self._full_map)
        self._compiled: dict = {}

    # -- the triangular map ------------------------------------------------------------------
    def _full_map(self, flat: Array) -> Array:
        """f: (B, H·W, C) -> (B, H·W, C); output t depends only on input positions < t."""
        images = flat.reshape(self.shape)
        params = self.model.apply({"params": self.params}, images)
        return mixture.sample(params, self.noise).reshape(flat.shape)

    def initial(self) -> Array:
        """The initial guess of every method: zeros, as in the original."""
        return jnp.zeros((self.shape[0], self.length, self.shape[3]), jnp.float32)

    # -- running a method --------------------------------------------------------------------
    def run(self, method: str, rows: Optional[int] = None, tol: float = 0.0,
            trace: bool = False) -> Outcome:
        """Sample with ``method``; ``rows`` is the block height (in image rows) of block methods."""
        if method not in METHODS:
            raise ValueError(f"pixelcnnpp method must be one of {list(METHODS)}, got {method!r}")
        if (method in BLOCK_METHODS) != (rows is not None):
            raise ValueError(f"method {method!r} {'needs' if method in BLOCK_METHODS else 'takes no'} "
                             "block size (image rows per block)")
        if rows is not None and not 1 <= rows <= self.shape[1]:
            raise ValueError(f"block of {rows} rows does not fit images of height {self.shape[1]}")
        if method == "sequential_cache":
            return self._sequential_cache(trace)
        if method == "gs_jacobi_cache":
            return self._gs_jacobi_cache(rows, tol, trace)
        block = None if rows is None else rows * self.shape[2]
        result = ffsolve.solve(self._f, self.initial(), method=method, block_size=block, tol=tol,
                               axis=1, trace=trace, trace_batch_axis=0 if trace else None)
        out = Outcome(np.asarray(result.x).reshape(self.shape), result.iterations, result.converged)
        if trace:
            out.error, out.change = result.trace.error, result.trace.change
        return out

    # -- sequential with the activation cache ------------------------------------------------
    def _fill_cache(self, images: Array):
        """The model's cache for ``images`` (a band over the whole image)."""
        _, variables = self.model.apply({"params": self.params}, images,
                                        band=(0, self.shape[1]), mutable=["cache"])
        return variables["cache"]

    def _band(self, images, cache, start, height):
        """Mixture parameters of rows [start, start+height) recomputed through the cache."""
        out, variables = self.model.apply({"params": self.params, "cache": cache}, images,
                                          band=(start, height), mutable=["cache"])
        first = band_rows(start, height, self.shape[1])[1].start
        return jax.lax.dynamic_slice_in_dim(out, start - first, height, axis=1), variables["cache"]

    def _sequential_cache_fn(self):
        b, h, w, c = self.shape

        def run(noise):
            images = jnp.zeros(self.shape, jnp.float32)

            def step(t, state):
                images, cache = state
                row, col = t // w, t % w
                params, cache = self._band(images, cache, row, 1)
                pixel = lambda a: jax.lax.dynamic_slice_in_dim(a, col, 1, axis=2)  # noqa: E731
                row_noise = mixture.Noise(
                    *(pixel(jax.lax.dynamic_slice_in_dim(a, row, 1, axis=1)) for a in noise))
                value = mixture.sample(pixel(params), row_noise)
                images = jax.lax.dynamic_update_slice(images, value, (0, row, col, 0))
                return images, cache

            images, _ = jax.lax.fori_loop(0, h * w, step, (images, self._fill_cache(images)))
            return images

        return jax.jit(run)

    def _sequential_cache(self, trace: bool) -> Outcome:
        if "sequential_cache" not in self._compiled:
            self._compiled["sequential_cache"] = self._sequential_cache_fn()
        fn = self._compiled["sequential_cache"]
        images = np.asarray(jax.block_until_ready(fn(self.noise)))
        out = Outcome(images, self.length, True)
        if trace:
            # Step k writes position k-1 with its final value and nothing else, so iterate k is the
            # final image with positions >= k still at the initial zeros: the trace follows exactly.
            out.error, out.change = _sequential_trace(images.reshape(self.shape[0], self.length, -1))
        return out

    # -- GS-Jacobi window with the activation cache (each sample on its own) -----------------
    def _gs_jacobi_step_fn(self, rows: int, tol: float):
        _, h, w, c = self.shape
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
            open_ = (pos >= exact).reshape(rows, w, 1)  # positions before ``exact`` are final
            new = jnp.where(open_, new, old)
            moved = (jnp.abs(new - old).reshape(rows * w, c).max(axis=1) > tol) & (pos >= exact)
            # The leading unmoved positions were fixed points given an exact prefix, so they are
            # exact; the first moved one was just computed from an exact prefix, so it is too.
            first = jnp.where(moved.any(), jnp.argmax(moved), rows * w)
            exact = jnp.maximum(exact + 1, start * w + first + moved.any())
            exact = jnp.minimum(exact, h * w)
            change = jnp.sqrt(jnp.sum((new - old) ** 2))
            return jax.lax.dynamic_update_slice_in_dim(images, new, start, axis=0), cache, exact, change

        batched = jax.vmap(one, in_axes=(0, 0, 0, 0))

        def step(state, noise):
            images, cache, exact, iters, steps = state
            active = exact < h * w
            images, cache, exact, change = batched(images, cache, exact, noise)
            return images, cache, exact, iters + active.astype(jnp.int32), steps + 1, change

        return step

    def _gs_jacobi_init(self):
        images = jnp.zeros(self.shape, jnp.float32)
        # One cache per sample: vmap the fill over the batch (each with a batch axis of 1).
        cache = jax.vmap(lambda im: self._fill_cache(im[None]))(images)
        zeros = jnp.zeros(self.shape[0], jnp.int32)
        return images, cache, zeros, zeros, jnp.int32(0)

    def _gs_jacobi_cache(self, rows: int, tol: float, trace: bool) -> Outcome:
        key = ("gs_jacobi_cache", rows, tol)
        if key not in self._compiled:
            step = self._gs_jacobi_step_fn(rows, tol)
            total = self.length

            def loop(noise):
                def cond(state):
                    return jnp.any(state[2] < total)

                def body(state):
                    return step(state, noise)[:5]

                return jax.lax.while_loop(cond, body, self._gs_jacobi_init())

            self._compiled[key] = (jax.jit(loop), jax.jit(step), jax.jit(self._gs_jacobi_init))
        loop, step, init = self._compiled[key]
        if not trace:
            images, _, _, per_sample, steps = jax.block_until_ready(loop(self.noise))
            return Outcome(np.asarray(images), int(steps), True, np.asarray(per_sample))
        state = init()
        iterates, changes = [np.asarray(state[0])], []
        while bool(jnp.any(state[2] < self.length)):
            *state, change = step(tuple(state), self.noise)
            iterates.append(np.asarray(state[0]))
            changes.append(np.asarray(change))
            if len(changes) > self.length:  # the triangular argument forbids this
                raise RuntimeError("gs_jacobi_cache exceeded H*W iterations")
        stacked = np.stack(iterates).reshape(len(iterates), self.shape[0], -1).astype(np.float64)
        error = np.sqrt(((stacked - stacked[-1]) ** 2).sum(axis=2))
        return Outcome(iterates[-1], len(changes), True, np.asarray(state[3]), error,
                       np.stack(changes))


def _sequential_trace(final: np.ndarray):
    """Error and change per step of a sampler that writes one final position per step."""
    sq = (final.astype(np.float64) ** 2).sum(axis=2)  # (B, T)
    tail = np.concatenate([np.cumsum(sq[:, ::-1], axis=1)[:, ::-1], np.zeros((len(sq), 1))], axis=1)
    return np.sqrt(tail).T, np.sqrt(sq).T


def exact_match_tolerance(method: str) -> float:
    """Largest |difference| from ``sequential`` still reported as an exact match.

    Methods that call the same compiled full-image map as ``sequential`` must agree bit for bit
    (the triangular argument is exact in floating point when f is the same function): 0. The
    cached methods evaluate the same network on bands of rows, so XLA picks other kernels and
    float rounding differs (about 1e-6 per pass); that is allowed to grow along the chain, but
    must stay below half a grey level of the 8-bit image (1/255 in [−1, 1] units), below which
    the two samples are the same picture.
    """
    return 0.0 if method in SOLVE_METHODS else mixture.BIN


def compare(images: np.ndarray, reference: np.ndarray, method: str) -> dict:
    """``max_abs_diff_vs_sequential``, ``exact_match`` and the tolerance used."""
    diff = float(np.max(np.abs(images.astype(np.float64) - reference)))
    tol = exact_match_tolerance(method)
    return {
        "max_abs_diff_vs_sequential": diff,
        "bitwise_equal": bool(np.array_equal(images, reference)),
        "exact_match": bool(diff <= tol),
        "exact_match_tolerance": tol,
    }


def time_fn(sampler: Sampler, method: str, rows: Optional[int], tol: float) -> Callable[[], Any]:
    """A zero-argument call of one method, for :func:`ffsolve.timing.time_call`."""
    return lambda: sampler.run(method, rows, tol).images
