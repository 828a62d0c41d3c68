"""MADE's data space: dequantised pixels in logit space, and bits per dimension.

As in the original, a pixel value v in 0..255 becomes x = (v + u) / 256 with u ~ U[0, 1)
(dequantisation), then y = logit(λ + (1 − 2λ) x). The model is a logistic density over y; its
likelihood is reported in bits per dimension of the 256-level pixel space, i.e. with the
change of variables y -> x -> v included, so the numbers compare with other image models.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

# (channels, height, width) of every dataset MADE runs on; flattened channel-major as the original.
IMAGE_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "digits": (1, 8, 8)}


def flatten_images(images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` or ``(N, H, W, C)`` uint8 -> ``(N, C·H·W)`` uint8, channel-major."""
    if images.ndim == 3:
        return images.reshape(len(images), -1)
    if images.ndim == 4:
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), -1)
    raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got shape {images.shape}")


def logit_bounds(lam: float) -> tuple[float, float]:
    """The range of y = logit(λ + (1 − 2λ) x) for x in [0, 1]; samples are clamped to it."""
    return math.log(lam) - math.log1p(-lam), math.log1p(-lam) - math.log(lam)


def to_logit(pixels: torch.Tensor, noise: torch.Tensor, lam: float) -> torch.Tensor:
    """uint8 pixels plus dequantisation noise in [0, 1) -> logit space (float32)."""
    x = (pixels.float() + noise) / 256.0
    p = lam + (1.0 - 2.0 * lam) * x
    return torch.log(p) - torch.log1p(-p)


def to_unit(y: torch.Tensor, lam: float) -> torch.Tensor:
    """Logit space -> [0, 1] (the inverse of :func:`to_logit` without the 256 levels)."""
    return ((torch.sigmoid(y) - lam) / (1.0 - 2.0 * lam)).clamp(0.0, 1.0)


def logistic_log_density(y: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Elementwise log density of Logistic(mean, exp(log_scale)) at y."""
    z = (y - mean) * torch.exp(-log_scale)
    return -z - log_scale - 2.0 * F.softplus(-z)


def bits_per_dim(y: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, lam: float) -> torch.Tensor:
    """Per-example bits per dimension of the dequantised 256-level pixels, ``(batch,)``.

    log p(v) = log p(y) + log |dy/dx| − log 256, with dy/dx = (1 − 2λ) / (p (1 − p)) and
    p = sigmoid(y).
    """
    log_det = math.log1p(-2.0 * lam) - F.logsigmoid(y) - F.logsigmoid(-y)
    log_p = logistic_log_density(y, mean, log_scale) + log_det - math.log(256.0)
    return -log_p.mean(dim=1) / math.log(2.0)
