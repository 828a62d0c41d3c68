"""PixelCNN++ model properties: causality in raster order (pixels and, inside a pixel, channels),
and the discretized logistic mixture's likelihood against numerical integration.

Tiny models (1 resnet, 8 filters, 3 components) on 8×8 images keep JIT compilation short.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from ffsolve.experiments.pixelcnnpp import mixture
from ffsolve.experiments.pixelcnnpp.model import PixelCNNPP, output_channels

H = W = 8
MIX = 3


def tiny(channels: int):
    model = PixelCNNPP(nr_resnet=1, nr_filters=8, nr_logistic_mix=MIX)
    x = jax.random.uniform(jax.random.PRNGKey(channels), (2, H, W, channels), minval=-1, maxval=1)
    params = model.init(jax.random.PRNGKey(10 + channels), x)["params"]
    return model, params, x


@pytest.mark.parametrize("channels", [1, 3])
def test_mixture_parameters_at_t_ignore_pixels_from_t_on(channels):
    """Changing any pixel >= t (raster order, any channel) leaves the output at t bit-identical,
    and the output at t does depend on earlier pixels (gradient nonzero somewhere before t)."""
    model, params, x = tiny(channels)
    apply = jax.jit(lambda v: model.apply({"params": params}, v))
    base = np.asarray(apply(x))
    rng = np.random.default_rng(0)
    flat_x = np.asarray(x).reshape(2, H * W, channels)
    for t in (0, 1, W - 1, W, 3 * W + 5, H * W - 1):
        changed = flat_x.copy()
        changed[:, t:] = rng.uniform(-1, 1, size=changed[:, t:].shape)
        out = np.asarray(apply(jnp.asarray(changed.reshape(x.shape)))).reshape(2, H * W, -1)
        np.testing.assert_array_equal(out[:, : t + 1], base.reshape(2, H * W, -1)[:, : t + 1],
                                      err_msg=f"output at or before {t} saw pixels >= {t}")
        assert not np.array_equal(out[:, t + 1:], base.reshape(2, H * W, -1)[:, t + 1:]) or t == H * W - 1
    # Dependence on the past is real (not a model that ignores its input).
    grad = jax.grad(lambda v: apply(v)[:, 4, 4].sum())(x)
    seen = np.abs(np.asarray(grad)).sum(axis=(0, 3)).reshape(-1)
    assert seen[: 4 * W + 4].max() > 0 and seen[4 * W + 4:].max() == 0


def test_channel_c_depends_only_on_earlier_channels_of_its_pixel():
    """RGB coupling: the mean of channel c uses channels < c of the same pixel, never >= c; and a
    sampled channel c moves with the noise of channels <= c only."""
    model, params, x = tiny(3)
    params_out = model.apply({"params": params}, x)
    mix = mixture.split(params_out, 3)
    means = np.asarray(mixture.coupled_means(mix, x))
    for c in range(3):
        changed = np.asarray(x).copy()
        changed[..., c:] = -changed[..., c:] + 0.3
        after = np.asarray(mixture.coupled_means(mix, jnp.asarray(changed)))
        np.testing.assert_array_equal(after[..., : c + 1, :], means[..., : c + 1, :])
        if c > 0:
            earlier = np.asarray(x).copy()
            earlier[..., c - 1] = -earlier[..., c - 1] + 0.3
            moved = np.asarray(mixture.coupled_means(mix, jnp.asarray(earlier)))
            assert not np.array_equal(moved[..., c, :], means[..., c, :])
    noise = mixture.draw_noise(jax.random.PRNGKey(3), (2, H, W, 3), MIX)

    def pixel(value_noise):
        return mixture.sample(params_out[:, 2, 3], mixture.Noise(noise.component[:, 2, 3], value_noise))

    jac = np.asarray(jax.jacobian(pixel)(noise.value[:, 2, 3]))  # (B, C_out, B, C_in)
    for b in range(2):
        block = jac[b, :, b, :]
        assert np.all(block[np.triu_indices(3, k=1)] == 0), block  # no channel sees later noise
        assert np.all(np.diag(block) != 0) or np.any(np.abs(pixel(noise.value[:, 2, 3])[b]) == 1)


def logistic_pdf(v, mean, log_scale):
    return stats.logistic.pdf(v, loc=mean, scale=np.exp(log_scale))


def integrated_probability(mix, x, b, i, j):
    """P(pixel) by integrating each component's logistic densities over each channel's bin."""
    c_count = x.shape[-1]
    x_pixel = np.asarray(x[b, i, j], np.float64)
    means = np.asarray(mixture.coupled_means(mixture.Mixture(*(np.asarray(a[b, i, j], np.float64) for a in mix)), x_pixel))
    log_scales = np.asarray(mix.log_scales[b, i, j], np.float64)
    weights = np.exp(np.asarray(jax.nn.log_softmax(mix.logits[b, i, j])))
    total = 0.0
    for k in range(weights.size):
        p = weights[k]
        for c in range(c_count):
            v = x_pixel[c]
            lo = -np.inf if v < -0.999 else v - mixture.BIN
            hi = np.inf if v > 0.999 else v + mixture.BIN
            p *= integrate.quad(logistic_pdf, lo, hi, args=(means[c, k], log_scales[c, k]),
                                epsabs=1e-13, epsrel=1e-10, limit=200)[0]
        total += p
    return total


@pytest.mark.parametrize("channels", [1, 3])
def test_log_prob_matches_numerical_integration(channels):
    """log P(x) equals log of ∫ mixture density over each bin, edge bins included."""
    rng = np.random.default_rng(channels)
    params = rng.normal(size=(1, 2, 3, output_channels(channels, MIX))).astype(np.float32)
    params[..., MIX:] *= 0.5  # scales of a few grey levels up to ~1: bins carry real mass
    levels = rng.integers(0, 256, size=(1, 2, 3, channels))
    levels[0, 0, 0] = 0  # left edge bin, to -inf
    levels[0, 0, 1] = 255  # right edge bin, to +inf
    x = jnp.asarray(levels / 127.5 - 1.0, jnp.float32)
    logp = np.asarray(mixture.log_prob(jnp.asarray(params), x), np.float64)
    mix = mixture.split(jnp.asarray(params), channels)
    for i in range(2):
        for j in range(3):
            expected = np.log(integrated_probability(mix, x, 0, i, j))
            assert logp[0, i, j] == pytest.approx(expected, abs=2e-4), (i, j)


def test_grey_probabilities_sum_to_one_over_the_256_levels():
    rng = np.random.default_rng(5)
    params = rng.normal(size=(1, 1, 1, output_channels(1, MIX))).astype(np.float32) * 0.5
    x = jnp.asarray(np.arange(256).reshape(256, 1, 1, 1) / 127.5 - 1.0, jnp.float32)
    logp = mixture.log_prob(jnp.broadcast_to(jnp.asarray(params), (256, 1, 1, params.shape[-1])), x)
    assert float(jnp.exp(logp).sum()) == pytest.approx(1.0, abs=1e-4)


def test_bad_inputs_are_refused_with_a_message():
    with pytest.raises(ValueError, match="divisible by 4"):
        PixelCNNPP(1, 4, 2).init(jax.random.PRNGKey(0), jnp.zeros((1, 6, 8, 1)))
    with pytest.raises(ValueError, match="1 .grey. or 3 .RGB."):
        output_channels(2, 5)
