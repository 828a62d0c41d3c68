"""MADE (Germain et al., 2015) as the paper uses it: a masked MLP in natural order that predicts a
logistic distribution (mean and log-scale) for every dimension, in logit space.

Output d (both its mean and its log-scale) depends only on inputs < d: that is what makes sampling
a lower-triangular system that ``ffsolve.solve`` can solve (see ``ffsolve.experiments.made.system``).
The masks are buffers, so a checkpoint carries its own connectivity; :func:`load_checkpoint`
checks that connectivity before trusting it.
"""

from __future__ import annotations

import io
import os
from itertools import pairwise
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ffsolve.kit import CheckpointError, write_bytes

CHECKPOINT_FORMAT = "ffsolve.made/1"
LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 7.0  # keeps exp(log_scale) finite in float32 early in training


class _MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask of shape ``(out, in)``.

    Masked weights are exact zeros, so a masked input contributes exactly 0 to the sum and changes
    no bit of the outputs it must not reach: Jacobi iterates then equal sequential ones bit for bit.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", torch.ones(out_features, in_features))
        self._masked: tuple[tuple, torch.Tensor] | None = None

    def set_mask(self, mask: torch.Tensor) -> None:
        self.mask.copy_(mask.to(self.mask.dtype))

    def masked_weight(self) -> torch.Tensor:
        """``weight * mask``; outside autograd, computed once and reused while neither changes.

        Sampling calls the model hundreds of times on the same weights; recomputing the product
        every call cost a quarter of a 784-512-512 forward pass on the CPU (batch 100), a cost of
        neither the paper's method nor its baseline. The product is the same bits either way. The
        reuse is keyed on the tensors' version counters (bumped by every in-place update, e.g. an
        optimizer step or ``load_state_dict``), storage, dtype and device; a write through
        ``weight.data`` bypasses the counter and is not seen, so write the parameter itself.
        """
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return self.weight * self.mask
        key = (self.weight._version, self.mask._version, self.weight.data_ptr(), self.mask.data_ptr(),
               self.weight.dtype, self.weight.device)
        if self._masked is None or self._masked[0] != key:
            self._masked = (key, (self.weight * self.mask).detach())
        return self._masked[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


def hidden_degrees(nin: int, hidden_sizes: Sequence[int]) -> list[torch.Tensor]:
    """Degree of every hidden unit: unit k of a layer sees inputs 1..degree (1-based).

    Degrees are spread evenly over [lowest degree of the previous layer, nin − 1], both ends
    included, instead of drawn at random: deterministic without a seed, and every input reaches
    the later outputs even when the layer is narrower than ``nin`` (a cyclic assignment would cut
    off inputs > width; missing the top degree would cut input nin − 2 off the last output).
    """
    degrees, low = [], 1
    for width in hidden_sizes:
        degree = torch.linspace(low, max(nin - 1, low), width, dtype=torch.float64).round().long()
        degrees.append(degree)
        low = int(degree.min())
    return degrees


def autoregressive_masks(nin: int, hidden_sizes: Sequence[int], nout_per_dim: int) -> list[torch.Tensor]:
    """The ``(out, in)`` 0/1 masks of every layer, natural order, outputs tiled per parameter."""
    inputs = torch.arange(1, nin + 1)
    degrees = [inputs] + hidden_degrees(nin, hidden_sizes)
    masks = [(later[:, None] >= earlier[None, :]).float() for earlier, later in zip(degrees, degrees[1:])]
    # Output d (degree d) may read hidden units of degree < d, i.e. inputs < d only.
    output = (inputs[:, None] > degrees[-1][None, :]).float()
    masks.append(output.repeat(nout_per_dim, 1))
    return masks


class MADE(nn.Module):
    """Masked autoencoder predicting, per dimension, a logistic's mean and log-scale.

    Args:
        nin: number of dimensions D (784 for MNIST, 3072 for CIFAR-10 flattened channel-major).
        hidden_sizes: widths of the hidden ReLU layers (paper: ``[512, 512]``).

    ``forward(x)`` takes ``(batch, nin)`` and returns ``(mean, log_scale)``, each ``(batch, nin)``;
    both at position d depend only on ``x[:, :d]``.
    """

    def __init__(self, nin: int, hidden_sizes: Sequence[int] = (512, 512)):
        super().__init__()
        if nin < 2:
            raise ValueError(f"MADE needs at least 2 dimensions, got nin={nin}")
        if not hidden_sizes or any(h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive widths, got {list(hidden_sizes)}")
        self.nin = nin
        self.hidden_sizes = [int(h) for h in hidden_sizes]
        widths = [nin] + self.hidden_sizes + [2 * nin]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(pairwise(widths)):
            layers.append(_MaskedLinear(a, b))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        for layer, mask in zip(self.masked_layers(), autoregressive_masks(nin, self.hidden_sizes, 2)):
            layer.set_mask(mask)

    def masked_layers(self) -> list[_MaskedLinear]:
        return [m for m in self.net if isinstance(m, _MaskedLinear)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        mean, log_scale = out[:, : self.nin], out[:, self.nin:]
        return mean, log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)


def connectivity(model: MADE) -> torch.Tensor:
    """``(nin, nin)`` boolean: entry [d, j] is True when output d (mean or scale) can see input j."""
    path = None
    for layer in model.masked_layers():
        mask = (layer.mask != 0).double()
        path = mask if path is None else mask @ path
    reach = path != 0
    return reach[: model.nin] | reach[model.nin:]


def check_autoregressive(model: MADE, source: str = "model") -> None:
    """Refuse masks that let output d see an input >= d (natural order)."""
    reach = connectivity(model)
    bad = torch.triu(reach, diagonal=0).nonzero()
    if len(bad):
        d, j = (int(v) for v in bad[0])
        raise CheckpointError(
            f"{source}: masks are not autoregressive in natural order (output {d} reads input {j}, "
            f"{len(bad)} such pairs); the checkpoint is not a natural-order MADE"
        )


def save_checkpoint(model: MADE, path: str | os.PathLike, metadata: dict) -> None:
    """Save weights, masks and plain-typed metadata; loadable with ``torch.load(weights_only=True)``."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "nin": model.nin,
        "hidden_sizes": list(model.hidden_sizes),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[MADE, dict]:
    """The model (eval mode) and metadata saved by :func:`save_checkpoint`.

    Also accepts a bare ``state_dict`` with the same layer names (``net.0.weight``, ``net.0.mask``,
    ...), as a MADE built from masked ``nn.Linear`` layers in an ``nn.Sequential`` saves it; its
    sizes are read off the weights. Either way the masks are checked to be autoregressive.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"MADE checkpoint {path} does not exist; set made.per_dataset.<dataset>.checkpoint "
            "(or made.checkpoint) to null to train one, or point it at an existing file"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure: say which file and why
        raise CheckpointError(
            f"cannot read MADE checkpoint {path} with torch.load(weights_only=True): {err}"
        ) from err
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        state, metadata = payload["state_dict"], dict(payload.get("metadata", {}))
        nin, hidden = int(payload["nin"]), [int(h) for h in payload["hidden_sizes"]]
    elif isinstance(payload, dict) and "net.0.weight" in payload:
        state, metadata = payload, {}
        weights = sorted(
            (int(k.split(".")[1]), v) for k, v in payload.items() if k.endswith(".weight")
        )
        nin = weights[0][1].shape[1]
        hidden = [w.shape[0] for _, w in weights[:-1]]
        if weights[-1][1].shape[0] != 2 * nin:
            raise CheckpointError(
                f"{path}: last layer has {weights[-1][1].shape[0]} outputs, expected 2 x {nin} "
                "(mean and log-scale per dimension)"
            )
    else:
        raise CheckpointError(
            f"{path} is not a MADE checkpoint: expected format {CHECKPOINT_FORMAT!r} (written by the "
            "made_train rule) or a state_dict with net.0.weight, net.0.mask, ..."
        )
    model = MADE(nin, hidden)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit a MADE({nin}, {hidden}): {err}") from err
    check_autoregressive(model, str(path))
    return model.eval(), metadata
