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

Every function here takes *sets* of positions (rows), so one code path serves the sequential
sampler (one position per step), the cached Jacobi-GS (one position per block per step) and the
fill (every position: a whole forward pass that leaves every cache consistent with an image).
Computing a position again from unchanged inputs writes the same values, so the coarse
resolutions are simply computed for every position in a step when any position needs them.

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
