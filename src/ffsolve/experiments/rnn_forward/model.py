"""The GRU trained on MNIST next-pixel prediction in raster order, and its checkpoint I/O.

``torch.nn.GRU`` reads the binarized pixels shifted by one, ``u_t = x_{t-1}`` (``u_0 = 0``), over
T = 784 steps (s_0 = 0); a linear readout of the state s_t gives the logit of pixel ``x_t`` being
on, so every step has a loss and the gradients need not cross 784 steps to reach the weights.
Training uses ``torch.nn.GRU`` for speed; evaluation hands the same weights, unchanged and in the
same layout, to ``ffsolve.recurrence.cells.gru`` (:meth:`NextPixelGRU.cell_weights`), whose
recurrence every method then solves; the readout scores each method's states in bits per pixel.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ffsolve.experiments.rnn_forward.cases import WEIGHT_NAMES
from ffsolve.kit import CheckpointError, write_bytes

CHECKPOINT_FORMAT = "ffsolve.rnn_forward.next_pixel_gru/1"


class NextPixelGRU(nn.Module):
    """A one-layer GRU over a time-major sequence ``(T, B, input_size)`` and a linear readout of
    each state: the logit that the next pixel is on."""

    def __init__(self, hidden_size: int, input_size: int = 1):
        super().__init__()
        self.hidden_size, self.input_size = hidden_size, input_size
        self.gru = nn.GRU(input_size, hidden_size)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        """Logits ``(T, B)`` of pixels 0..T-1 from the inputs ``(T, B, 1)`` (pixels shifted by one)."""
        states, _ = self.gru(sequence)
        return self.logits(states)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """Next-pixel logits ``(T, B)`` from states ``(T, B, H)``, whichever method computed them."""
        return self.head(states)[..., 0]

    def cell_weights(self) -> dict[str, np.ndarray]:
        """The GRU's weights in ``torch.nn.GRU``'s layout (gates r, z, n), float32 copies."""
        return {name: getattr(self.gru, f"{name}_l0").detach().cpu().numpy().copy()
                for name in WEIGHT_NAMES["gru"]}

    @torch.no_grad()
    def bits_per_pixel(self, states: torch.Tensor, targets: torch.Tensor) -> float:
        """Mean binary cross-entropy, in bits, of the binarized pixels ``targets (T, B)`` under the
        readout of ``states (T, B, H)``."""
        return bits_per_pixel(self.logits(states), targets)


def bits_per_pixel(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean binary cross-entropy of ``targets`` (0/1) under ``logits``, in bits per pixel."""
    loss = nn.functional.binary_cross_entropy_with_logits(logits.double(), targets.double())
    return float(loss) / math.log(2.0)


def save_checkpoint(model: NextPixelGRU, path: str | os.PathLike, metadata: dict) -> None:
    """Weights, sizes and plain-typed metadata; loadable with ``torch.load(weights_only=True)``."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "hidden_size": model.hidden_size,
        "input_size": model.input_size,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": dict(metadata),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, hidden_size: int | None = None) -> tuple[NextPixelGRU, dict]:
    """The classifier (eval mode) and metadata saved by :func:`save_checkpoint`.

    ``hidden_size``, when given, must match the checkpoint's (else the error names the key).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"GRU checkpoint {path} does not exist; run the rnn_forward_train rule")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read GRU checkpoint {path} with torch.load(weights_only=True): {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an rnn_forward checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    if hidden_size is not None and int(payload["hidden_size"]) != int(hidden_size):
        raise CheckpointError(
            f"rnn_forward.hidden_size is {hidden_size} but {path} holds a GRU with "
            f"{payload['hidden_size']} hidden units; set rnn_forward.hidden_size to match, or retrain"
        )
    model = NextPixelGRU(int(payload["hidden_size"]), int(payload["input_size"]))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the next-pixel GRU: {err}") from err
    return model.eval(), dict(payload.get("metadata", {}))
