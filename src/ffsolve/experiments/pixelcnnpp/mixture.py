"""The discretized logistic mixture of PixelCNN++: its log-likelihood and its noise-driven sampler.

Pixels live in [−1, 1] with 256 levels, bin half-width 1/255. Each pixel has ``M`` components; a
component has one logistic (mean, log-scale) per channel. For RGB the channel means are coupled
*autoregressively inside the pixel*: mean_G += c0·R, mean_B += c1·R + c2·G (c = tanh(raw)), so
channel c depends only on channels < c of the same pixel.

Sampling is a deterministic function of fixed uniform noise (paper §1.3): the component by
Gumbel-max, each channel by the logistic inverse CDF, clipped to [−1, 1] and, as in the original,
not rounded to the 256 levels. Drawing the noise once turns sampling into a triangular map.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = Any
BIN = 1.0 / 255.0  # half the distance between two of the 256 levels in [−1, 1]
MIN_LOG_SCALE = -7.0
NOISE_EPS = 1e-5  # uniforms in [eps, 1 − eps]: keeps log(−log u) and logit(u) finite


class Mixture(NamedTuple):
    """Per-pixel mixture parameters; ``M`` components, ``C`` channels."""

    logits: Array  # (..., M)
    means: Array  # (..., C, M), before the RGB coupling
    log_scales: Array  # (..., C, M), clipped below at MIN_LOG_SCALE
    coeffs: Array  # (..., 3, M) tanh coupling coefficients for RGB; (..., 0, M) for grey


def split(params: Array, channels: int) -> Mixture:
    """Cut the network's last axis into the mixture's parts (see ``output_channels``)."""
    per = 10 if channels == 3 else 3
    if channels not in (1, 3) or params.shape[-1] % per:
        raise ValueError(
            f"mixture parameters of width {params.shape[-1]} do not fit {channels} channel(s)"
        )
    m = params.shape[-1] // per
    lead = params.shape[:-1]
    logits = params[..., :m]
    rest = params[..., m:].reshape(lead + (per - 1, m))
    c = channels
    means = rest[..., :c, :]
    log_scales = jnp.maximum(rest[..., c: 2 * c, :], MIN_LOG_SCALE)
    coeffs = jnp.tanh(rest[..., 2 * c:, :])
    return Mixture(logits, means, log_scales, coeffs)


def coupled_means(mix: Mixture, x: Array) -> Array:
    """Channel means after the RGB coupling with the pixel's own earlier channels ``x`` (..., C)."""
    if x.shape[-1] == 1:
        return mix.means
    r, g = x[..., 0:1], x[..., 1:2]  # (..., 1), broadcast over the components
    c = mix.coeffs
    mean_r = mix.means[..., 0, :]
    mean_g = mix.means[..., 1, :] + c[..., 0, :] * r
    mean_b = mix.means[..., 2, :] + c[..., 1, :] * r + c[..., 2, :] * g
    return jnp.stack([mean_r, mean_g, mean_b], axis=-2)


def log_prob(params: Array, x: Array) -> Array:
    """log P(x) per pixel, shape ``x.shape[:-1]``, for ``x`` on the 256 levels of [−1, 1].

    Each channel's probability is the logistic CDF difference over its bin; the outermost bins
    extend to ±infinity. Where the bin probability underflows (< 1e-5) the density at the centre
    times the bin width is used instead (the PixelCNN++ convention), and every branch is computed
    from inputs that keep it finite so gradients stay NaN-free.
    """
    mix = split(params, x.shape[-1])
    centred = x[..., None] - coupled_means(mix, x)  # (..., C, M)
    inv_s = jnp.exp(-mix.log_scales)
    plus = inv_s * (centred + BIN)
    minus = inv_s * (centred - BIN)
    log_cdf_plus = plus - jax.nn.softplus(plus)  # log σ(plus)
    log_sf_minus = -jax.nn.softplus(minus)  # log (1 − σ(minus))
    delta = jax.nn.sigmoid(plus) - jax.nn.sigmoid(minus)
    mid = inv_s * centred
    log_pdf_mid = mid - mix.log_scales - 2.0 * jax.nn.softplus(mid)
    log_interior = jnp.where(
        delta > 1e-5,
        jnp.log(jnp.maximum(delta, 1e-12)),
        log_pdf_mid + jnp.log(2.0 * BIN),
    )
    xc = x[..., None]
    per_channel = jnp.where(
        xc < -0.999, log_cdf_plus, jnp.where(xc > 0.999, log_sf_minus, log_interior)
    )
    per_component = per_channel.sum(axis=-2) + jax.nn.log_softmax(mix.logits, axis=-1)
    return jax.scipy.special.logsumexp(per_component, axis=-1)


def bits_per_dim(params: Array, x: Array) -> Array:
    """Mean negative log-likelihood in bits per sub-pixel (the PixelCNN++ unit)."""
    return -log_prob(params, x).mean() / (jnp.log(2.0) * x.shape[-1])


class Noise(NamedTuple):
    """All the randomness of one batch of samples, drawn up front (paper §1.3)."""

    component: Array  # (B, H, W, M) uniforms for Gumbel-max
    value: Array  # (B, H, W, C) uniforms for the logistic inverse CDF


def draw_noise(key: Array, shape: tuple[int, int, int, int], nr_logistic_mix: int) -> Noise:
    """Uniforms in [NOISE_EPS, 1 − NOISE_EPS] for ``shape = (B, H, W, C)`` images."""
    k_mix, k_val = jax.random.split(key)
    b, h, w, c = shape
    draw = lambda k, s: jax.random.uniform(k, s, minval=NOISE_EPS, maxval=1.0 - NOISE_EPS)  # noqa: E731
    return Noise(draw(k_mix, (b, h, w, nr_logistic_mix)), draw(k_val, (b, h, w, c)))


def sample(params: Array, noise: Noise) -> Array:
    """The pixels that ``noise`` selects under ``params``: (..., C) in [−1, 1], deterministic.

    ``params`` and the noise arrays share their leading axes (any pixels, any layout).
    """
    channels = noise.value.shape[-1]
    mix = split(params, channels)
    gumbel = -jnp.log(-jnp.log(noise.component))
    pick = jax.nn.one_hot(jnp.argmax(mix.logits + gumbel, axis=-1), mix.logits.shape[-1])
    take = lambda a: jnp.sum(a * pick[..., None, :], axis=-1)  # noqa: E731 - (..., K, M) -> (..., K)
    means, scales = take(mix.means), jnp.exp(take(mix.log_scales))
    u = noise.value
    logistic = scales * (jnp.log(u) - jnp.log1p(-u))
    if channels == 1:
        return jnp.clip(means + logistic, -1.0, 1.0)
    c = take(mix.coeffs)
    r = jnp.clip(means[..., 0] + logistic[..., 0], -1.0, 1.0)
    g = jnp.clip(means[..., 1] + c[..., 0] * r + logistic[..., 1], -1.0, 1.0)
    b = jnp.clip(means[..., 2] + c[..., 1] * r + c[..., 2] * g + logistic[..., 2], -1.0, 1.0)
    return jnp.stack([r, g, b], axis=-1)
