"""PixelCNN++ through a per-pixel activation cache (Ramachandran et al. 2017, "Fast generation
for convolutional autoregressive models"), on the parameters of :class:`model.PixelCNNPP`.

The row-band cache (:mod:`ffsolve.experiments.pixelcnnpp.model`) recomputes every layer on one
or two rows per sampled pixel. This one computes, per sampled pixel, each layer at *one position*,
reading the positions its kernel covers from a cache of that layer's input. It rests on where each
stream's values become final:

- the down-shifted stream ``u`` at row i reads only image rows < i, at every layer and every
  resolution. So ``u`` is computed a whole row at a time, when a row is started (row i2 of the
  half-resolution map when full-resolution row 2·i2 is started, and so on), and its values are
  kept as maps for the other stream to read.
- the down-right-shifted stream ``ul`` at (i, j) reads image positions before (i, j) in raster
  order, through 2×2 kernels that look up and left only. So it is computed one position per layer:
  the input at (i, j) is written into that layer's cache, and the 2×2 window ending there is read
  back. A half-resolution position (i2, j2) is computed when full-resolution (2·i2, 2·j2) is;
  its value then serves the four full-resolution positions the transposed conv maps it to.

The functions on full-size maps take *sets* of positions (rows), so one code path serves the
cached Jacobi-GS (one position per block per step), the fill (every position: a whole forward
pass that leaves every cache consistent with an image) and any single position. Computing a
position again from unchanged inputs writes the same values, so the coarse resolutions are simply
computed for every position in a step when any position needs them. The sequential sampler
(``sequential_cache``) visits positions in raster order only, and :class:`RasterCache` keeps for
it just the rows each layer needs (two per layer, before ``concat_elu``).

The arithmetic is the model's, on other shapes (windows and single rows instead of whole maps), so
outputs match :meth:`PixelCNNPP.__call__` within float32 rounding, not bit for bit; the
teacher-forced test checks every position against the full pass.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp

from ffsolve.experiments.pixelcnnpp.model import SCALES, concat_elu

Array = Any
_DIMS = ("NHWC", "HWIO", "NHWC")


# -- the parameter tree, in the model's order ------------------------------------------------
def network_layers(params: dict, nr_resnet: int) -> dict:
    """The model's parameters arranged by role.

    Flax names a compact module's children by class and creation order, so this walks the
    children in the order :class:`PixelCNNPP` creates them (a mismatch fails the teacher-forced
    test and, for a missing name, raises ``KeyError`` here).
    """
    conv = map(lambda i: params[f"ShiftedConv_{i}"]["Conv_0"], itertools.count())
    resnet = map(lambda i: params[f"GatedResnet_{i}"], itertools.count())
    deconv = map(lambda i: params[f"ShiftedDeconv_{i}"]["ConvTranspose_0"], itertools.count())
    layers = {"u_in": next(conv), "ul_in_down": next(conv), "ul_in_right": next(conv),
              "up": {}, "down": {}}
    for level, scale in enumerate(SCALES):
        entry = {"stride": (next(conv), next(conv)) if level > 0 else None}
        entry["resnets"] = [(next(resnet), next(resnet)) for _ in range(nr_resnet)]
        layers["up"][scale] = entry
    for level, scale in enumerate(reversed(SCALES)):
        entry = {"deconv": (next(deconv), next(deconv)) if level > 0 else None}
        entry["resnets"] = [(next(resnet), next(resnet)) for _ in range(nr_resnet + (level > 0))]
        layers["down"][scale] = entry
    layers["head"] = params["Dense_0"]
    return layers


def _down_count(scale: int, nr_resnet: int) -> int:
    return nr_resnet + (scale != SCALES[-1])


def stream_layers(nr_resnet: int) -> dict[str, dict[int, int]]:
    """Convolution-like layers of each stream at each scale (``ul`` carries the head), so that
    work can be counted in layer-positions: ``u`` the input or stride-2 conv, two convs per up
    and per down gated resnet and the transposed conv from the coarser scale; ``ul`` the same, with
    two input convs and the head at full resolution. They add up to ``system.layers_per_scale``."""
    nr = nr_resnet
    u = {s: 1 + 2 * nr + 2 * _down_count(s, nr) + (s != SCALES[-1])
         for s in SCALES}
    ul = dict(u)
    ul[SCALES[0]] += 2  # two input convs instead of one, and the head
    return {"u": u, "ul": ul}


# -- the cache -------------------------------------------------------------------------------
def empty_cache(batch: int, height: int, width: int, nr_resnet: int, nr_filters: int) -> dict:
    """Zeros of every cached map (the zeros around the maps are the convolutions' padding).

    Keys: ``u/<scale>/<layer>`` inputs of the ``u`` stream's convolutions, padded one row on top
    and one column each side (row i at [i + 1, 1:W + 1]); ``ul/<scale>/<layer>`` inputs of the
    ``ul`` stream's, padded one row on top and one column left ((i, j) at [i + 1, j + 1]);
    ``u_up/<scale>``, ``u_down/<scale>`` the ``u`` values each ``ul`` block reads (stacked per
    layer); ``ul_out/<scale>`` the ``ul`` stream's output at the coarse scales, for the transposed
    convolution to the finer one.
    """
    nf, nr = nr_filters, nr_resnet
    cache = {}
    for scale in SCALES:
        h, w = height // scale, width // scale
        down = _down_count(scale, nr)
        for key, n in (("up", nr), ("down", down)):
            for k in range(n):
                for part in (1, 2):
                    cache[f"u/{scale}/{key}{k}.{part}"] = jnp.zeros((batch, h + 1, w + 2, 2 * nf))
                    cache[f"ul/{scale}/{key}{k}.{part}"] = jnp.zeros((batch, h + 1, w + 1, 2 * nf))
        if scale != SCALES[-1]:  # inputs of the stride-2 convolutions to the next scale
            cache[f"u/{scale}/stride"] = jnp.zeros((batch, h + 1, w + 2, nf))
            cache[f"ul/{scale}/stride"] = jnp.zeros((batch, h + 1, w + 1, nf))
        cache[f"u_up/{scale}"] = jnp.zeros((nr + 1, batch, h, w, nf))
        cache[f"u_down/{scale}"] = jnp.zeros((down, batch, h, w, nf))
        if scale != SCALES[0]:
            cache[f"ul_out/{scale}"] = jnp.zeros((batch, h, w, nf))
    return cache


# -- one layer at a set of positions (the ul stream) -----------------------------------------
def _write_positions(cache: Array, value: Array, rows: Array, cols: Array) -> Array:
    """``value`` (P, B, C) into a padded map at positions (rows, cols)."""
    return cache.at[:, rows + 1, cols + 1].set(jnp.swapaxes(value, 0, 1))


def _windows(cache: Array, rows: Array, cols: Array, size: tuple[int, int]) -> Array:
    """The (P, B, kh, kw, C) windows of a padded map whose top-left corners are (rows, cols)."""
    b, _, _, c = cache.shape
    return jax.vmap(lambda r, q: jax.lax.dynamic_slice(cache, (0, r, q, 0), (b,) + size + (c,)))(
        rows, cols)


def _apply_window(conv: dict, window: Array) -> Array:
    return jnp.einsum("pbhwc,hwcf->pbf", window, conv["kernel"]) + conv["bias"]


def _conv_at(cache: dict, key: str, conv: dict, value: Array, rows: Array, cols: Array):
    """A 2×2 down-right-shifted convolution at (rows, cols): write its input ``value`` (P, B, C)
    there, read the window that ends there."""
    cache = {**cache, key: _write_positions(cache[key], value, rows, cols)}
    return cache, _apply_window(conv, _windows(cache[key], rows, cols, (2, 2)))


def _dense(dense: dict, x: Array) -> Array:
    return x @ dense["kernel"] + dense["bias"]


def _gated_resnet(conv, cache, key, params, x, aux):
    """The model's gated residual block, its two convolutions done by ``conv(cache, key, params,
    input) -> (cache, output)`` (at positions or on rows), keyed ``<key>.1`` and ``<key>.2``."""
    cache, h = conv(cache, f"{key}.1", params["ShiftedConv_0"]["Conv_0"], concat_elu(x))
    if aux is not None:
        h = h + _dense(params["Dense_0"], concat_elu(aux))
    cache, h = conv(cache, f"{key}.2", params["ShiftedConv_1"]["Conv_0"], concat_elu(h))
    a, b = jnp.split(h, 2, axis=-1)
    return cache, x + a * jax.nn.sigmoid(b)


def _ul_resnet(cache, key, params, x, aux, rows, cols):
    def conv(cache, key, params, value):
        return _conv_at(cache, key, params, value, rows, cols)
    return _gated_resnet(conv, cache, key, params, x, aux)


def _padded_image(images: Array) -> Array:
    """The image with the constant-one channel, two zero rows on top and a zero column each side."""
    x = jnp.concatenate([images, jnp.ones(images.shape[:-1] + (1,), images.dtype)], axis=-1)
    return jnp.pad(x, ((0, 0), (2, 0), (1, 1), (0, 0)))


def _ul_input(layers, image, rows, cols):
    """The ``ul`` stream's first value at (rows, cols): a (1, 3) conv of the row above, and a
    (2, 1) conv of the column to the left (zero in row 0 and column 0 respectively)."""
    above = _apply_window(layers["ul_in_down"],
                          _windows(image, rows + 1, cols, (1, 3))) * (rows > 0)[:, None, None]
    left = _apply_window(layers["ul_in_right"],
                         _windows(image, rows + 1, cols, (2, 1))) * (cols > 0)[:, None, None]
    return above + left


def _gather(maps: Array, rows: Array, cols: Array) -> Array:
    """(B, H, W, C) maps at (rows, cols) -> (P, B, C)."""
    return jnp.swapaxes(maps[:, rows, cols], 0, 1)


def ul_positions(layers: dict, cache: dict, image: Array, rows: Array, cols: Array,
                 scale: int = 1, every: bool = False):
    """The ``ul`` stream at full-resolution positions (rows, cols) at ``scale`` and, when any
    position needs them (or ``every``), at the coarser scales; returns the cache, the stream's
    output there (P, B, C) and the work done (layer-positions). The ``u`` rows must be current."""
    nr = len(layers["up"][scale]["resnets"])
    up = layers["up"][scale]
    work = len(rows) * stream_layers(nr)["ul"][scale]
    if scale == SCALES[0]:
        ul = _ul_input(layers, image, rows, cols)
    else:  # the stride-2 conv: the window of the finer map ending at (2i, 2j)
        ul = _apply_window(up["stride"][1], _windows(cache[f"ul/{scale // 2}/stride"],
                                                     2 * rows, 2 * cols, (2, 2)))
    u_up = cache[f"u_up/{scale}"]
    skips = [ul]
    for k, (_, params) in enumerate(up["resnets"]):
        cache, ul = _ul_resnet(cache, f"ul/{scale}/up{k}", params, ul,
                               _gather(u_up[k + 1], rows, cols), rows, cols)
        skips.append(ul)

    if scale != SCALES[-1]:
        cache = {**cache, f"ul/{scale}/stride": _write_positions(
            cache[f"ul/{scale}/stride"], ul, rows, cols)}
        coarse = (rows // 2, cols // 2)

        def coarser(cache):
            # Filling, every coarse position once; stepping, the ones these positions map to.
            where = _every_position(cache[f"ul_out/{2 * scale}"]) if every else coarse
            cache, _, work = ul_positions(layers, cache, image, *where, scale=2 * scale,
                                          every=every)
            return cache, work

        if every:
            cache, more = coarser(cache)
        else:
            needed = jnp.any((rows % 2 == 0) & (cols % 2 == 0))
            cache, more = jax.lax.cond(needed, coarser, _no_work, cache)
        work = work + more
        conv = layers["down"][scale]["deconv"][1]
        source = _gather(cache[f"ul_out/{2 * scale}"], *coarse)  # (P, B, C)
        p, b, c = source.shape
        y = jax.lax.conv_transpose(source.reshape(p * b, 1, 1, c), conv["kernel"], (2, 2),
                                   "VALID", dimension_numbers=_DIMS)  # (P·B, 2, 2, F)
        y = y.reshape(p, b, 2, 2, -1)[jnp.arange(p), :, rows % 2, cols % 2]
        ul = y + conv["bias"]
    else:
        ul = skips.pop()

    u_down = cache[f"u_down/{scale}"]
    for k, (_, params) in enumerate(layers["down"][scale]["resnets"]):
        aux = jnp.concatenate([_gather(u_down[k], rows, cols), skips.pop()], axis=-1)
        cache, ul = _ul_resnet(cache, f"ul/{scale}/down{k}", params, ul, aux, rows, cols)
    assert not skips and k + 1 == _down_count(scale, nr)
    if scale != SCALES[0]:
        cache = {**cache, f"ul_out/{scale}": cache[f"ul_out/{scale}"].at[:, rows, cols].set(
            jnp.swapaxes(ul, 0, 1))}
    return cache, ul, jnp.int32(work)


def _no_work(cache):
    return cache, jnp.int32(0)


# -- one layer on a set of rows (the u stream) -----------------------------------------------
def _row_windows(cache: Array, rows: Array, height: int) -> Array:
    """(R·B, height, W + 2, C): the rows [r, r + height) of a padded map, for each r."""
    b, _, w, c = cache.shape
    windows = jax.vmap(lambda r: jax.lax.dynamic_slice(cache, (0, r, 0, 0), (b, height, w, c)))(rows)
    return windows.reshape((-1, height, w, c))


def _conv_rows(conv: dict, windows: Array, count: int, stride: int = 1) -> Array:
    y = jax.lax.conv_general_dilated(windows, conv["kernel"], (1, stride), "VALID",
                                     dimension_numbers=_DIMS) + conv["bias"]
    return y.reshape((count, -1) + y.shape[2:])  # (R·B, 1, W, F) -> (R, B, W, F)


def _write_rows(cache: Array, value: Array, rows: Array) -> Array:
    """``value`` (R, B, W, C) into a padded ``u`` map at rows."""
    width = value.shape[2]
    return cache.at[:, rows + 1, 1:width + 1].set(jnp.swapaxes(value, 0, 1))


def _u_conv_rows(cache, key, conv, value, rows):
    cache = {**cache, key: _write_rows(cache[key], value, rows)}
    return cache, _conv_rows(conv, _row_windows(cache[key], rows, 2), len(rows))


def _u_resnet(cache, key, params, x, aux, rows):
    def conv(cache, key, params, value):
        return _u_conv_rows(cache, key, params, value, rows)
    return _gated_resnet(conv, cache, key, params, x, aux)


def u_rows(layers: dict, cache: dict, image: Array, rows: Array, scale: int = 1,
           every: bool = False) -> tuple[dict, Array]:
    """The ``u`` stream on rows ``rows`` of ``scale`` (image rows above them final) and, when any
    of them starts a coarser row (or ``every``), on the coarser scales; the values go to
    ``u_up`` and ``u_down`` for the ``ul`` stream. Returns the cache and the work done, in
    layer-positions."""
    count = len(rows)
    up = layers["up"][scale]
    nr = len(up["resnets"])
    work = count * (image.shape[2] - 2) // scale * stream_layers(nr)["u"][scale]
    if scale == SCALES[0]:
        u = _conv_rows(layers["u_in"], _row_windows(image, rows, 2), count)
        u = u * (rows > 0)[:, None, None, None]
    else:
        u = _conv_rows(up["stride"][0], _row_windows(cache[f"u/{scale // 2}/stride"], 2 * rows, 2),
                       count, stride=2)
    skips = [u]
    for k, (params, _) in enumerate(up["resnets"]):
        cache, u = _u_resnet(cache, f"u/{scale}/up{k}", params, u, None, rows)
        skips.append(u)
    cache = {**cache, f"u_up/{scale}": cache[f"u_up/{scale}"].at[:, :, rows].set(
        jnp.swapaxes(jnp.stack(skips), 1, 2))}

    if scale != SCALES[-1]:
        cache = {**cache, f"u/{scale}/stride": _write_rows(cache[f"u/{scale}/stride"], u, rows)}

        def coarser(cache):
            coarse = jnp.arange(cache[f"u_up/{2 * scale}"].shape[2]) if every else rows // 2
            return u_rows(layers, cache, image, coarse, scale=2 * scale, every=every)

        cache, more = coarser(cache) if every else jax.lax.cond(
            jnp.any(rows % 2 == 0), coarser, _no_work, cache)
        work = work + more
        conv = layers["down"][scale]["deconv"][0]
        source = cache[f"u_down/{2 * scale}"][-1][:, rows // 2]  # (B, R, Wc, C)
        b, _, wc, c = source.shape
        source = jnp.swapaxes(source, 0, 1).reshape(count * b, 1, wc, c)
        y = jax.lax.conv_transpose(source, conv["kernel"], (2, 2), "VALID",
                                   dimension_numbers=_DIMS)  # (R·B, 2, 2·Wc + 1, F)
        y = y[:, :, 1:1 + 2 * wc].reshape(count, b, 2, 2 * wc, -1)
        u = y[jnp.arange(count), :, rows % 2] + conv["bias"]
    else:
        u = skips.pop()

    downs = []
    for k, (params, _) in enumerate(layers["down"][scale]["resnets"]):
        cache, u = _u_resnet(cache, f"u/{scale}/down{k}", params, u, skips.pop(), rows)
        downs.append(u)
    assert not skips
    return {**cache, f"u_down/{scale}": cache[f"u_down/{scale}"].at[:, :, rows].set(
        jnp.swapaxes(jnp.stack(downs), 1, 2))}, jnp.int32(work)


# -- whole steps -----------------------------------------------------------------------------
def head(layers: dict, ul: Array) -> Array:
    """Mixture parameters (P, B, out) from the ``ul`` stream's output."""
    return _dense(layers["head"], jax.nn.elu(ul))


def positions_step(layers: dict, cache: dict, images: Array, positions: Array):
    """Mixture parameters (P, B, out) at raster ``positions`` (P,) of ``images`` (B, H, W, C),
    every earlier position's activations being in ``cache``: the ``u`` rows of any position that
    starts a row, then the ``ul`` stream there. Returns (cache, parameters, work done in
    layer-positions)."""
    width = images.shape[2]
    rows, cols = positions // width, positions % width
    image = _padded_image(images)
    cache, work = jax.lax.cond(jnp.any(cols == 0),
                               lambda c: u_rows(layers, c, image, rows), _no_work, cache)
    cache, ul, more = ul_positions(layers, cache, image, rows, cols)
    return cache, head(layers, ul), work + more


def fill(layers: dict, cache: dict, images: Array):
    """Every position at once (a forward pass): the cache consistent with ``images``, and the
    mixture parameters (B, H, W, out)."""
    b, h, w, _ = images.shape
    image = _padded_image(images)
    cache, _ = u_rows(layers, cache, image, jnp.arange(h), every=True)
    rows, cols = jnp.divmod(jnp.arange(h * w), w)
    cache, ul, _ = ul_positions(layers, cache, image, rows, cols, every=True)
    params = head(layers, ul)  # (T, B, out)
    return cache, jnp.swapaxes(params, 0, 1).reshape(b, h, w, -1)


def _every_position(maps: Array) -> tuple[Array, Array]:
    """(rows, cols) of every position of (B, H, W, C) ``maps``, in raster order."""
    return jnp.divmod(jnp.arange(maps.shape[1] * maps.shape[2]), maps.shape[2])


# -- the raster loop: one position after another, two rows per layer ---------------------------
class RasterCache:
    """The per-pixel cache for positions taken one at a time in raster order (``sequential_cache``).

    A sequential sampler visits (i, j) after every position before it, so each layer needs far
    less than the maps above keep:

    - a ``u`` convolution (2×3, rows i − 1 and i) keeps its input's previous row only:
      ``u_prev/<scale>/<layer>`` (B, W_s, C); the row is computed whole when it starts.
    - a ``ul`` convolution (2×2: (i − 1, j − 1), (i − 1, j), (i, j − 1), (i, j)) splits into the
      two taps on the row above, computed for the whole row when it starts, from the previous
      row (``ul_above/<scale>/<layer>`` (B, W_s, F)), and the two on its own row, computed at the
      position: ``ul_row/<scale>/<layer>`` (B, 1 + W_s, C) keeps the row's inputs (column j at
      index j + 1, index 0 the zero padding); at the next row start it is the row above.
    - a ``ul`` block's 1×1 layer on the ``u`` stream (all of an up block's auxiliary input, the
      ``u`` half of a down block's) is final when the row starts too: it is added into
      ``ul_above`` of the block's first convolution for the whole row; only the down blocks'
      skip half is computed at the position.
    - the ``u`` values of the current row of each scale (``u_up``, ``u_down``; the transposed
      convolution of the next finer row reads ``u_down``) and the coarse ``ul`` output the
      transposed convolution reads (``ul_out``) are kept for the current row of their scale.

    So a step is the ``ul`` stream at one position (and at the coarse positions it starts), small
    matrix products of the batch; a row start adds that row's ``u`` stream and the row-above
    terms, whole-row products. The whole sample is one compiled loop
    (``system.Sampler._compiled_loop``); every row buffer is updated in place.

    Every cached input is the value *before* ``concat_elu`` (half the channels; the activation is
    applied where the value is read). The arithmetic is the model's in another summation order, so
    outputs match :meth:`PixelCNNPP.__call__` within float32 rounding, not bit for bit (the
    teacher-forced test checks every position against the full pass). A step at a position other
    than the next one in raster order computes something else (the cache holds only the rows the
    next position needs): the loop is for sequential use only; :func:`positions_step` serves any
    set of positions.
    """

    def __init__(self, layers: dict, shape: tuple[int, int, int, int], nr_resnet: int,
                 nr_filters: int):
        self.layers, self.nr, self.nf = layers, nr_resnet, nr_filters
        self.batch, self.height, self.width, self.channels = shape
        self.counts = stream_layers(nr_resnet)
        # The transposed 2×2 convolutions as four (C, F) matrices, one per output parity (read
        # off the convolution of unit inputs: each entry is one kernel weight times one).
        self.deconv = {}
        for scale in SCALES[:-1]:
            conv = layers["down"][scale]["deconv"][1]
            c = conv["kernel"].shape[-2]
            unit = jnp.eye(c, dtype=conv["kernel"].dtype).reshape(c, 1, 1, c)
            self.deconv[scale] = jax.lax.conv_transpose(unit, conv["kernel"], (2, 2), "VALID",
                                                        dimension_numbers=_DIMS)  # (C, 2, 2, F)

    # -- the cache layout ---------------------------------------------------------------------
    def _names(self, scale: int) -> list[str]:
        names = [f"up{k}" for k in range(self.nr)]
        names += [f"down{k}" for k in range(_down_count(scale, self.nr))]
        return [f"{n}.{part}" for n in names for part in (1, 2)]

    def init(self) -> dict:
        """The cache before position 0: zeros (the zero rows above the image)."""
        b, nf, nr = self.batch, self.nf, self.nr
        cache = {}
        for scale in SCALES:
            w = self.width // scale
            for name in self._names(scale):
                out = 2 * nf if name.endswith(".2") else nf
                cache[f"u_prev/{scale}/{name}"] = jnp.zeros((b, w, nf))
                cache[f"ul_row/{scale}/{name}"] = jnp.zeros((b, w + 1, nf))
                cache[f"ul_above/{scale}/{name}"] = jnp.zeros((b, w, out))
            cache[f"ul_above/{scale}/in"] = jnp.zeros((b, w, nf))
            if scale != SCALES[-1]:
                cache[f"u_prev/{scale}/stride"] = jnp.zeros((b, w, nf))
                cache[f"ul_row/{scale}/stride"] = jnp.zeros((b, w + 1, nf))
            cache[f"u_up/{scale}"] = jnp.zeros((nr + 1, b, w, nf))
            cache[f"u_down/{scale}"] = jnp.zeros((_down_count(scale, nr), b, w, nf))
            if scale != SCALES[0]:
                cache[f"ul_out/{scale}"] = jnp.zeros((b, w, nf))
        return cache

    # -- one position ---------------------------------------------------------------------------
    def position(self, cache: dict, images: Array, t: Array):
        """Mixture parameters (B, out) at raster position ``t`` of ``images`` (B, H, W, C), every
        earlier position having been stepped through ``cache`` in order. Returns (cache,
        parameters, work done in layer-positions)."""
        i, j = t // self.width, t % self.width
        # A row start: rows of the scales whose row starts here (level 0: the full resolution
        # only; 1: and the half; 2: all three), their u stream and their ul row-above taps.
        level = (i % 2 == 0).astype(jnp.int32) + (i % 4 == 0).astype(jnp.int32)
        branches = [lambda c, n=n: self._row_start(c, images, i, n) for n in range(len(SCALES))]
        cache, work = jax.lax.cond(
            j == 0, lambda c: jax.lax.switch(level, branches, c), _no_work, cache)
        cache, ul, more = self._ul_position(cache, images, i, j, SCALES[0])
        return cache, head(self.layers, ul), work + more

    # -- row starts: the u stream and the row-above taps of the ul stream ------------------------
    def _row_start(self, cache: dict, images: Array, i: Array, levels: int):
        image = _padded_image(images)
        cache, work = self._u_row(cache, image, i, SCALES[0], levels)
        for scale in SCALES[:levels + 1]:
            cache = self._ul_above(cache, image, i // scale, scale)
        return cache, jnp.int32(work)

    def _u_row(self, cache, image, i, scale, levels, finer=None):
        """The u stream on row ``i`` of ``scale`` and, ``levels`` deep, on the coarser scales'
        rows starting with it (``finer``: the finer scale's rows 2i − 1 and 2i). Returns the
        cache and the work (static: layer-positions)."""
        up = self.layers["up"][scale]
        work = self.width // scale * self.counts["u"][scale]
        if scale == SCALES[0]:  # the image rows i − 2 and i − 1 (padded rows i and i + 1)
            window = jax.lax.dynamic_slice_in_dim(image, i, 2, axis=1)
            u = _conv(self.layers["u_in"], window)[:, 0] * (i > 0)
        else:  # the stride-2 conv on the finer rows 2i − 1 and 2i
            u = _conv(up["stride"][0], _u_window(*finer), stride=2)[:, 0]
        skips = [u]
        for k, (params, _) in enumerate(up["resnets"]):
            cache, u = self._u_resnet(cache, f"{scale}/up{k}", params, u, None)
            skips.append(u)
        cache = {**cache, f"u_up/{scale}": jnp.stack(skips)}

        if scale != SCALES[-1]:
            key = f"u_prev/{scale}/stride"
            if levels > 0:
                cache, more = self._u_row(cache, image, i // 2, 2 * scale, levels - 1,
                                          finer=(cache[key], u))
                work += more
            cache = {**cache, key: u}
            conv = self.layers["down"][scale]["deconv"][0]
            source = cache[f"u_down/{2 * scale}"][-1][:, None]  # (B, 1, Wc, C)
            wc = source.shape[2]
            y = jax.lax.conv_transpose(source, conv["kernel"], (2, 2), "VALID",
                                       dimension_numbers=_DIMS)  # (B, 2, 2·Wc + 1, F)
            y = jax.lax.dynamic_index_in_dim(y[:, :, 1:1 + 2 * wc], i % 2, axis=1,
                                             keepdims=False)
            u = y + conv["bias"]
        else:
            u = skips.pop()

        downs = []
        for k, (params, _) in enumerate(self.layers["down"][scale]["resnets"]):
            aux = _dense(params["Dense_0"], concat_elu(skips.pop()))
            cache, u = self._u_resnet(cache, f"{scale}/down{k}", params, u, aux)
            downs.append(u)
        assert not skips
        return {**cache, f"u_down/{scale}": jnp.stack(downs)}, work

    def _u_resnet(self, cache, key, params, x, aux):
        def conv(cache, name, params, value):
            prev = cache[f"u_prev/{key}.{name}"]
            cache = {**cache, f"u_prev/{key}.{name}": value}
            return cache, _conv(params, _u_window(concat_elu(prev), concat_elu(value)))[:, 0]
        return _gated_resnet_parts(conv, cache, params, x, aux)

    def _ul_above(self, cache, image, r, scale):
        """What every ul position of row ``r`` at ``scale`` adds from rows already final: each
        convolution's taps on the row above, and each block's 1×1 layer on the u stream (the
        whole auxiliary input of an up block, the u half of a down block's)."""
        cache = dict(cache)
        for name in self._names(scale):
            conv = self._ul_conv(scale, name)
            row = concat_elu(cache[f"ul_row/{scale}/{name}"])  # the row above, padded left
            pairs = jnp.concatenate([row[:, :-1], row[:, 1:]], axis=-1)
            cache[f"ul_above/{scale}/{name}"] = pairs @ _taps(conv["kernel"][0])
        for k, (_, params) in enumerate(self.layers["up"][scale]["resnets"]):
            key = f"ul_above/{scale}/up{k}.1"
            aux = cache[f"u_up/{scale}"][k + 1]
            cache[key] = cache[key] + _dense(params["Dense_0"], concat_elu(aux))
        for k, (_, params) in enumerate(self.layers["down"][scale]["resnets"]):
            key = f"ul_above/{scale}/down{k}.1"
            u_rows, _ = _aux_split(params["Dense_0"]["kernel"])
            aux = concat_elu(cache[f"u_down/{scale}"][k])
            cache[key] = cache[key] + (aux @ u_rows + params["Dense_0"]["bias"])
        if scale == SCALES[0]:  # the (1, 3) input conv of image row r − 1 (padded row r + 1)
            window = jax.lax.dynamic_slice_in_dim(image, r + 1, 1, axis=1)
            cache[f"ul_above/{scale}/in"] = _conv(self.layers["ul_in_down"], window)[:, 0] * (r > 0)
        else:  # the stride-2 conv's taps on the finer row 2r − 1 (columns 2c − 1 and 2c)
            conv = self.layers["up"][scale]["stride"][1]
            row = cache[f"ul_row/{scale // 2}/stride"]
            pairs = jnp.concatenate([row[:, 0:-1:2], row[:, 1::2]], axis=-1)
            cache[f"ul_above/{scale}/in"] = pairs @ _taps(conv["kernel"][0])
        return cache

    def _ul_conv(self, scale, name):
        block, part = name.split(".")
        kind, k = block.rstrip("0123456789"), int(block[len(block.rstrip("0123456789")):])
        params = self.layers[kind][scale]["resnets"][k][1]
        return params[f"ShiftedConv_{int(part) - 1}"]["Conv_0"]

    # -- the ul stream at one position -------------------------------------------------------
    def _ul_position(self, cache, images, i, j, scale):
        """The ul stream at (i, j) of ``scale`` (and the coarser scales where (i, j) starts a
        coarse position). Returns the cache, the output (B, C) and the work."""
        up = self.layers["up"][scale]
        work = jnp.int32(self.counts["ul"][scale])
        if scale == SCALES[0]:  # the (2, 1) conv of image rows i − 1 and i at column j − 1
            conv = self.layers["ul_in_right"]
            left = jnp.maximum(j - 1, 0)
            one = jnp.ones((self.batch, 1), images.dtype)
            cur = jnp.concatenate([images[:, i, left], one], axis=-1)
            above = jnp.concatenate([images[:, jnp.maximum(i - 1, 0), left], one], -1) * (i > 0)
            right = (above @ conv["kernel"][0, 0] + cur @ conv["kernel"][1, 0] + conv["bias"])
            ul = cache[f"ul_above/{scale}/in"][:, j] + right * (j > 0)
        else:  # the stride-2 conv's taps on the finer row: columns 2j − 1, 2j (index 2j, 2j + 1)
            conv = up["stride"][1]
            row = cache[f"ul_row/{scale // 2}/stride"]
            pair = jax.lax.dynamic_slice_in_dim(row, 2 * j, 2, axis=1).reshape(self.batch, -1)
            ul = cache[f"ul_above/{scale}/in"][:, j] + pair @ _taps(conv["kernel"][1]) + conv["bias"]
        skips = [ul]
        for k, (_, params) in enumerate(up["resnets"]):
            cache, ul = self._ul_resnet(cache, scale, f"up{k}", params, ul, None, j)
            skips.append(ul)

        if scale != SCALES[-1]:
            key = f"ul_row/{scale}/stride"
            cache = {**cache, key: jax.lax.dynamic_update_index_in_dim(cache[key], ul, j + 1, 1)}

            def coarser(cache):
                cache, _, more = self._ul_position(cache, images, i // 2, j // 2, 2 * scale)
                return cache, more

            cache, more = jax.lax.cond((i % 2 == 0) & (j % 2 == 0), coarser, _no_work, cache)
            work = work + more
            conv = self.layers["down"][scale]["deconv"][1]
            source = cache[f"ul_out/{2 * scale}"][:, j // 2]  # (B, C)
            matrix = self.deconv[scale][:, i % 2, j % 2]  # (C, F)
            ul = source @ matrix + conv["bias"]
        else:
            ul = skips.pop()

        for k, (_, params) in enumerate(self.layers["down"][scale]["resnets"]):
            _, skip_rows = _aux_split(params["Dense_0"]["kernel"])
            aux = concat_elu(skips.pop()) @ skip_rows  # the u half is in ul_above
            cache, ul = self._ul_resnet(cache, scale, f"down{k}", params, ul, aux, j)
        assert not skips
        if scale != SCALES[0]:
            key = f"ul_out/{scale}"
            cache = {**cache, key: jax.lax.dynamic_update_index_in_dim(cache[key], ul, j, 1)}
        return cache, ul, work

    def _ul_resnet(self, cache, scale, block, params, x, aux, j):
        def conv(cache, name, params, value):
            key = f"{scale}/{block}.{name}"
            row = jax.lax.dynamic_update_index_in_dim(cache[f"ul_row/{key}"], value, j + 1, 1)
            cache = {**cache, f"ul_row/{key}": row}
            pair = jax.lax.dynamic_slice_in_dim(row, j, 2, axis=1)  # columns j − 1 and j
            h = concat_elu(pair).reshape(self.batch, -1) @ _taps(params["kernel"][1])
            return cache, h + cache[f"ul_above/{key}"][:, j] + params["bias"]
        return _gated_resnet_parts(conv, cache, params, x, aux)


def _gated_resnet_parts(conv, cache, params, x, aux):
    """The gated residual block with ``conv(cache, part, params, input) -> (cache, output)``
    taking the *un-activated* input (it applies concat_elu where it reads); ``aux`` is what the
    block's 1×1 layer adds (or None)."""
    cache, h = conv(cache, "1", params["ShiftedConv_0"]["Conv_0"], x)
    if aux is not None:
        h = h + aux
    cache, h = conv(cache, "2", params["ShiftedConv_1"]["Conv_0"], h)
    a, b = jnp.split(h, 2, axis=-1)
    return cache, x + a * jax.nn.sigmoid(b)


def _aux_split(kernel: Array) -> tuple[Array, Array]:
    """A down block's 1×1 kernel on concat_elu([u, skip]) = elu([u, skip, −u, −skip]) as its rows
    for the u half (elu([u, −u])) and for the skip half (elu([skip, −skip]))."""
    c = kernel.shape[0] // 4
    return (jnp.concatenate([kernel[:c], kernel[2 * c:3 * c]]),
            jnp.concatenate([kernel[c:2 * c], kernel[3 * c:]]))


def _taps(kernel: Array) -> Array:
    """A kernel row (kw, C, F) as one (kw·C, F) matrix: columns left to right."""
    return kernel.reshape(-1, kernel.shape[-1])


def _u_window(above: Array, row: Array) -> Array:
    """Rows (B, W, C) above and at a u convolution's output row, stacked and padded one column
    each side: (B, 2, W + 2, C)."""
    return jnp.pad(jnp.stack([above, row], axis=1), ((0, 0), (0, 0), (1, 1), (0, 0)))


def _conv(conv: dict, window: Array, stride: int = 1) -> Array:
    return jax.lax.conv_general_dilated(window, conv["kernel"], (1, stride), "VALID",
                                        dimension_numbers=_DIMS) + conv["bias"]
