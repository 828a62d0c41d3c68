"""PixelCNN++ as an autoregressive model over 256 levels per position, for
:func:`ffsolve.sample_autoregressive`.

The experiment that owns a model says how to read it as one: ``load(checkpoint, device=...)``
returns an object whose call on a whole draft ``x`` (``(batch, T)`` levels in [0, 256), T = H·W
grey pixels in raster order) gives every position's distribution at once, a teacher-forced pass:
one network pass on the image ``2x/255 − 1`` gives each pixel's discretized logistic mixture, and
the mass of each of the 256 levels is the mixture's CDF difference over the level's bin (the
outermost bins reach ±infinity), as in :func:`ffsolve.experiments.pixelcnnpp.mixture.log_prob`
without its small-mass fallback (the sampler normalises over the 256 levels). Position t reads only
pixels < t (the network's shifted convolutions). Grey images only: an RGB pixel's channels are
coupled inside the pixel, so each channel would be a position of its own.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from ffsolve.experiments.pixelcnnpp import mixture
from ffsolve.experiments.pixelcnnpp.model import ARCHITECTURE_KEYS, PixelCNNPP

FRAMEWORK = "jax"  # what load()'s device is: a JAX device
LEVELS = 256
_FLOOR = 1e-30  # a level whose mass underflows in float32 gets this (log -69), never -inf


class LevelDistributions:
    """``model(x)``: ``(batch, T)`` integer levels (NumPy) -> ``(batch, T, 256)`` float32
    log-masses (NumPy), one jitted pass per call."""

    backend = "numpy"
    num_classes = LEVELS

    def __init__(self, model: PixelCNNPP, params, shape: tuple[int, int, int], *, device=None,
                 checkpoint: str = ""):
        height, width, channels = shape
        if channels != 1:
            raise ValueError(
                f"the speculative experiment samples grey PixelCNN++ models only, {checkpoint} has "
                f"{channels} channels (an RGB pixel's channels are coupled inside the pixel)")
        self.shape, self.length, self.device = (height, width), height * width, device
        self.params = params if device is None else jax.device_put(params, device)
        levels = np.linspace(-1.0, 1.0, LEVELS, dtype=np.float32)
        edges = jnp.asarray((levels[:-1] + levels[1:]) / 2)  # the 255 bin boundaries

        def log_masses(x):
            batch = x.shape[0]
            image = (x.astype(jnp.float32) * (2.0 / 255.0) - 1.0).reshape(batch, height, width, 1)
            out = model.apply({"params": self.params}, image).reshape(batch, self.length, -1)
            mix = mixture.split(out, 1)
            mean, log_scale = mix.means[..., 0, :, None], mix.log_scales[..., 0, :, None]
            cdf = jax.nn.sigmoid((edges - mean) * jnp.exp(-log_scale))  # (B, T, M, 255)
            lead = cdf.shape[:-1] + (1,)
            cdf = jnp.concatenate([jnp.zeros(lead, cdf.dtype), cdf, jnp.ones(lead, cdf.dtype)], -1)
            # The mixture as a broadcast product summed over its components: XLA's CPU einsum
            # here ran as B·T tiny products, 4.6x slower for the whole call (B 32, T 784, M 5).
            weights = jax.nn.softmax(mix.logits, -1)[..., None]
            mass = (weights * jnp.diff(cdf, axis=-1)).sum(axis=-2)
            return jnp.log(jnp.maximum(mass, _FLOOR))

        self._log_masses = jax.jit(log_masses)
        self.description = {"model": "pixelcnnpp", "nr_resnet": model.nr_resnet,
                            "nr_filters": model.nr_filters, "nr_logistic_mix": model.nr_logistic_mix,
                            "checkpoint": str(checkpoint), "positions": self.length,
                            "values": "256 grey levels"}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._log_masses(jnp.asarray(x, jnp.int32)))


def load(checkpoint, *, device=None) -> LevelDistributions:
    """The PixelCNN++ of ``checkpoint`` (written by ``pixelcnnpp_train``; its architecture and
    image shape are read from the file) on the JAX ``device`` (``None``: JAX's default)."""
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"PixelCNN++ checkpoint {path} does not exist: run pixelcnnpp_train")
    try:
        stored = serialization.msgpack_restore(path.read_bytes())
        arch = {k: int(stored["architecture"][k]) for k in ARCHITECTURE_KEYS}
    except Exception as err:  # noqa: BLE001 - any parse failure means "not one of ours"
        raise ValueError(f"{path} is not an ffsolve PixelCNN++ checkpoint: {err}") from None
    model = PixelCNNPP(nr_resnet=arch["nr_resnet"], nr_filters=arch["nr_filters"],
                       nr_logistic_mix=arch["nr_logistic_mix"])
    shape = (arch["height"], arch["width"], arch["channels"])
    # The parameter tree from shapes alone (an eager init would compile every layer's ops).
    template = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1,) + shape))["params"]
    params = serialization.from_state_dict(template, stored["params"])
    wrong = [jax.tree_util.keystr(k) for k, (t, p) in _pairs(template, params) if t.shape != np.shape(p)]
    if wrong:
        raise ValueError(f"{path}: parameters {wrong} do not fit its architecture {arch}")
    return LevelDistributions(model, params, shape, device=device, checkpoint=str(path))


def _pairs(template, params):
    flat_t, _ = jax.tree_util.tree_flatten_with_path(template)
    flat_p = jax.tree_util.tree_leaves(params)
    return [(path, (t, p)) for (path, t), p in zip(flat_t, flat_p)]
