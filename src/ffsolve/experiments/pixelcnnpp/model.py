"""PixelCNN++ (Salimans et al. 2017) in Flax linen, with optional row-band activation caching, and
its checkpoints (Flax msgpack holding the parameters and the architecture they fit).

The network follows the paper's description: a *down-shifted* stack ``u`` (sees the rows above)
and a *down-right-shifted* stack ``ul`` (sees the rows above and the pixels to the left), gated
residual blocks with concat_elu, three resolutions joined by two stride-2 down-samplings on the way
up and two stride-2 transposed convolutions on the way down, with skip connections between the two
passes, and a network-in-network head that outputs the parameters of a discretized logistic mixture
(see :mod:`ffsolve.experiments.pixelcnnpp.mixture`). Weight normalisation and dropout are left out: they
only matter for training speed/regularisation, not for the sampling experiment.

**Row bands (the cache).** Every layer's value at row i depends only on input rows <= i (at
its own resolution, rows are i * scale). So once the rows above a band are final, a band of rows
can be recomputed on its own, reading the rows above it from a cache. Passing ``band=(start,
height)`` (``start`` may be a traced value, ``height`` is static) makes the model compute only the
rows each resolution needs for full-resolution rows ``[start, start + height)`` (plus one row above
them, which finalises a row whose last pixel changed after it was last computed). Every layer that
reads rows above its output keeps its full input in the ``'cache'`` collection (apply with
``mutable=['cache']``). A band over the whole image fills the cache. This one mechanism gives the
cached sequential sampler (a band of one row per pixel) and the cached GS-Jacobi window.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import serialization

from ffsolve.kit import CheckpointError, write_bytes

Array = Any
SCALES = (1, 2, 4)  # the three resolutions, as divisors of the image height and width


@dataclasses.dataclass(frozen=True)
class Rows:
    """The rows ``[start, start + size)`` of a feature map of height ``total`` that a call computes.

    ``start`` may be traced (it moves during sampling); ``size`` and ``total`` are static, so
    shapes stay fixed and one compiled step serves every position.
    """

    start: Any
    size: int
    total: int

    @staticmethod
    def full(total: int) -> "Rows":
        return Rows(0, total, total)


def band_rows(start, height: int, image_height: int) -> dict[int, Rows]:
    """The rows to recompute at each resolution for full-resolution rows ``[start, start+height)``.

    At scale s the rows ``floor(start/s) - 1 .. floor((start+height-1)/s)`` are needed: one row
    above the band, because a row's last computation may have happened before the last pixel it
    depends on was written. The window is clamped into the map; rows it then covers beyond those
    needed are computed from stale inputs, but nothing above them reads them and they are
    recomputed before they are ever needed (values only flow downwards).
    """
    rows = {}
    for s in SCALES:
        total = image_height // s
        size = min(total, -(-(height - 1) // s) + 2)
        first = jnp.clip(start // s - 1, 0, total - size)
        rows[s] = Rows(first, size, total)
    return rows


def concat_elu(x: Array) -> Array:
    """ELU of x and of −x side by side: keeps both signs' information (doubles the channels)."""
    return nn.elu(jnp.concatenate([x, -x], axis=-1))


def _slice_rows(x: Array, start, size: int) -> Array:
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=1)


class _CachedInput(nn.Module):
    """Base for layers that read rows above their output: keeps their full input when banded."""

    def full_input(self, x: Array, rows: Optional[Rows]) -> Array:
        """The layer's whole input map: ``x`` itself, or ``x`` written into the cached map."""
        if rows is None:
            return x
        shape = (x.shape[0], rows.total) + x.shape[2:]
        cache = self.variable("cache", "input", jnp.zeros, shape, x.dtype)
        if rows.size == rows.total:
            cache.value = x
        else:
            cache.value = jax.lax.dynamic_update_slice_in_dim(cache.value, x, rows.start, axis=1)
        return cache.value


class ShiftedConv(_CachedInput):
    """A convolution whose output at (i, j) sees only rows <= i (``down``) and, for
    ``right=True``, only columns <= j of those rows: zero padding on top (and left), none below.

    With ``stride=2`` it halves the resolution, output row i reading input rows 2i−1 and 2i.
    """

    features: int
    kernel: tuple[int, int]
    right: bool = False
    stride: int = 1

    @nn.compact
    def __call__(self, x: Array, in_rows: Optional[Rows] = None,
                 out_rows: Optional[Rows] = None) -> Array:
        kh, kw = self.kernel
        source = self.full_input(x, in_rows)
        left, right = (kw - 1, 0) if self.right else ((kw - 1) // 2, (kw - 1) // 2)
        padded = jnp.pad(source, ((0, 0), (kh - 1, 0), (left, right), (0, 0)))
        if out_rows is not None:
            # Output rows [a, a+n) read padded rows [stride*a, stride*(a+n-1) + kh).
            size = self.stride * (out_rows.size - 1) + kh
            padded = _slice_rows(padded, self.stride * out_rows.start, size)
        return nn.Conv(self.features, self.kernel, strides=self.stride, padding="VALID")(padded)


class ShiftedDeconv(_CachedInput):
    """Stride-2 transposed convolution back to the finer resolution, cropped to stay causal:
    output row r reads input row floor(r/2) (and columns <= floor(c/2) for ``right=True``)."""

    features: int
    kernel: tuple[int, int]
    right: bool = False

    @nn.compact
    def __call__(self, x: Array, in_rows: Optional[Rows] = None,
                 out_rows: Optional[Rows] = None) -> Array:
        kw = self.kernel[1]
        source = self.full_input(x, in_rows)
        coarse = source.shape[1]
        offset = 0
        if out_rows is not None:
            # Fine rows [a, a+n) come from coarse rows floor(a/2) .. floor((a+n-1)/2).
            count = min(coarse, (out_rows.size + 1) // 2 + 1)
            first = jnp.clip(out_rows.start // 2, 0, coarse - count)
            source = _slice_rows(source, first, count)
            offset = out_rows.start - 2 * first
        y = nn.ConvTranspose(self.features, self.kernel, strides=(2, 2), padding="VALID")(source)
        width = 2 * x.shape[2]
        y = y[:, :, : width] if self.right else y[:, :, (kw - 1) // 2: (kw - 1) // 2 + width]
        if out_rows is not None:
            y = _slice_rows(y, offset, out_rows.size)
        return y


class GatedResnet(nn.Module):
    """x + a ⊙ σ(b), where (a, b) come from two shifted convs of concat_elu(x) (and of the
    auxiliary input ``aux`` through a 1×1 layer): the paper's gated residual block."""

    features: int
    right: bool

    @nn.compact
    def __call__(self, x: Array, aux: Optional[Array] = None, rows: Optional[Rows] = None) -> Array:
        kernel = (2, 2) if self.right else (2, 3)
        h = ShiftedConv(self.features, kernel, self.right)(concat_elu(x), rows, rows)
        if aux is not None:
            h = h + nn.Dense(self.features)(concat_elu(aux))
        h = concat_elu(h)
        h = ShiftedConv(2 * self.features, kernel, self.right)(h, rows, rows)
        a, b = jnp.split(h, 2, axis=-1)
        return x + a * nn.sigmoid(b)


def output_channels(channels: int, nr_logistic_mix: int) -> int:
    """Head width: per component a logit, and per channel a mean and a log-scale; RGB adds the
    three coupling coefficients (G on R; B on R and G)."""
    if channels == 1:
        return 3 * nr_logistic_mix
    if channels == 3:
        return 10 * nr_logistic_mix
    raise ValueError(f"PixelCNN++ handles 1 (grey) or 3 (RGB) channels, got {channels}")


class PixelCNNPP(nn.Module):
    """PixelCNN++ on images in [−1, 1], shape ``(B, H, W, C)`` with C in {1, 3}; H and W must be
    multiples of 4 (two halvings). Returns mixture parameters ``(B, H, W, output_channels)``, or
    for a ``band`` the rows ``band_rows(...)[1]`` of them (see the module docstring)."""

    nr_resnet: int = 5
    nr_filters: int = 160
    nr_logistic_mix: int = 10

    @nn.compact
    def __call__(self, x: Array, band: Optional[tuple[Any, int]] = None) -> Array:
        _, height, width, channels = x.shape
        if height % 4 or width % 4:
            raise ValueError(f"PixelCNN++ needs height and width divisible by 4, got {height}x{width}")
        nf, nr = self.nr_filters, self.nr_resnet
        rows = band_rows(*band, height) if band is not None else {s: None for s in SCALES}
        # A constant-one channel lets the first layers tell image border from zero padding.
        x = jnp.concatenate([x, jnp.ones(x.shape[:-1] + (1,), x.dtype)], axis=-1)

        # First layers read the (always complete) image directly, so they need no cache.
        u = _input_down_shift(ShiftedConv(nf, (2, 3)), x, rows[1], shift_right=False)
        ul = (_input_down_shift(ShiftedConv(nf, (1, 3)), x, rows[1], shift_right=False)
              + _input_down_shift(ShiftedConv(nf, (2, 1), right=True), x, rows[1],
                                  shift_right=True, shift_down=False))
        u_list, ul_list = [u], [ul]
        for level, scale in enumerate(SCALES):
            if level > 0:
                finer = rows[SCALES[level - 1]]
                u_list.append(ShiftedConv(nf, (2, 3), stride=2)(u_list[-1], finer, rows[scale]))
                ul_list.append(ShiftedConv(nf, (2, 2), right=True, stride=2)(
                    ul_list[-1], finer, rows[scale]))
            for _ in range(nr):
                u_list.append(GatedResnet(nf, right=False)(u_list[-1], rows=rows[scale]))
                ul_list.append(GatedResnet(nf, right=True)(ul_list[-1], u_list[-1], rows=rows[scale]))

        u, ul = u_list.pop(), ul_list.pop()
        for level, scale in enumerate(reversed(SCALES)):
            if level > 0:
                coarse = rows[SCALES[-level]]
                u = ShiftedDeconv(nf, (2, 3))(u, coarse, rows[scale])
                ul = ShiftedDeconv(nf, (2, 2), right=True)(ul, coarse, rows[scale])
            for _ in range(nr + (level > 0)):
                u = GatedResnet(nf, right=False)(u, u_list.pop(), rows=rows[scale])
                ul = GatedResnet(nf, right=True)(
                    ul, jnp.concatenate([u, ul_list.pop()], axis=-1), rows=rows[scale])
        assert not u_list and not ul_list, "every skip connection is used exactly once"
        return nn.Dense(output_channels(channels, self.nr_logistic_mix))(nn.elu(ul))


def _input_down_shift(conv: ShiftedConv, x: Array, rows: Optional[Rows], *,
                      shift_right: bool, shift_down: bool = True) -> Array:
    """conv(x) moved one row down (row 0 becomes zeros) and/or one column right, so that the
    first layer never sees the pixel it predicts.

    The down shift is done by giving the conv one extra zero row on top: its output row i is then
    the plain conv's row i−1. Row 0 (the conv of padding only, i.e. its bias) is zeroed, exactly
    what shifting in a zero row does. A band computes only its rows, from the complete image.
    """
    height = x.shape[1]
    rows = rows if rows is not None else Rows.full(height)
    if shift_down:
        x = jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))
    y = conv(x, None, rows)
    if shift_down:
        keep = (rows.start + jnp.arange(rows.size)) > 0
        y = jnp.where(keep[None, :, None, None], y, 0.0)
    if shift_right:
        y = jnp.pad(y, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]
    return y


# -- checkpoints ----------------------------------------------------------------------------
ARCHITECTURE_KEYS = ("nr_resnet", "nr_filters", "nr_logistic_mix", "height", "width", "channels")


def architecture(model: PixelCNNPP, shape: tuple[int, int, int]) -> dict:
    """The settings a checkpoint must agree with: model sizes and image shape (H, W, C)."""
    h, w, c = shape
    return {"nr_resnet": model.nr_resnet, "nr_filters": model.nr_filters,
            "nr_logistic_mix": model.nr_logistic_mix, "height": h, "width": w, "channels": c}


def save_checkpoint(model, path: str | os.PathLike, metadata: dict) -> None:
    """Write the model's parameters ``model`` (a Flax params tree) and the architecture they fit
    (``metadata``: :func:`architecture`) to ``path`` (atomically)."""
    write_bytes(path, serialization.msgpack_serialize(
        {"architecture": dict(metadata), "params": serialization.to_state_dict(model)}
    ))


def load_checkpoint(path: str | os.PathLike, model: PixelCNNPP, shape: tuple[int, int, int]):
    """Parameters from ``path`` for ``model`` on images of ``shape``; a clear error on mismatch."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"PixelCNN++ checkpoint {path} does not exist: train one (rule pixelcnnpp_train) or set "
            "pixelcnnpp.per_dataset.<dataset>.checkpoint to an existing file"
        )
    try:
        stored = serialization.msgpack_restore(path.read_bytes())
        found = {k: int(v) for k, v in stored["architecture"].items()}
        raw = stored["params"]
    except Exception as err:  # noqa: BLE001 - any parse failure means "not one of ours"
        raise CheckpointError(
            f"{path} is not an ffsolve PixelCNN++ checkpoint (msgpack with 'architecture' and "
            f"'params'): {err}"
        ) from None
    wanted = architecture(model, shape)
    wrong = {k: (found.get(k), v) for k, v in wanted.items() if found.get(k) != v}
    if wrong:
        details = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in wrong.items())
        raise CheckpointError(
            f"checkpoint {path} does not fit the configured model ({details}); set "
            "pixelcnnpp.per_dataset.<dataset> to the checkpoint's values or train a new one"
        )
    # The parameter tree from shapes alone: an eager init compiles every layer's ops (8.5 s of the
    # default measure job's start on 2 cores).
    template = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                              jnp.zeros((1,) + tuple(shape)))["params"]
    params = serialization.from_state_dict(template, raw)
    leaves = jax.tree_util.tree_flatten_with_path(template)[0]
    wrong = [jax.tree_util.keystr(key) for (key, t), p in zip(leaves, jax.tree_util.tree_leaves(params))
             if tuple(t.shape) != tuple(jnp.shape(p))]
    if wrong:
        raise CheckpointError(f"checkpoint {path}: parameters {wrong} do not fit the configured model")
    return jax.tree_util.tree_map(jnp.asarray, params)
