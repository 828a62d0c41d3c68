"""The GRU classifier trained on MNIST pixels in raster order, and its checkpoint I/O.

``torch.nn.GRU`` runs the sequence ``(T, B, 1)`` (T = 784, one pixel per step, s_0 = 0); a linear
layer classifies the last state. Training uses ``torch.nn.GRU`` for speed; evaluation hands the
same weights, unchanged and in the same layout, to ``ffsolve.recurrence.cells.gru``
(:meth:`GRUClassifier.cell_weights`), whose recurrence every method then solves.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ffsolve.experiments.rnn_forward.cases import WEIGHT_NAMES
from ffsolve.kit.io import write_bytes

CHECKPOINT_FORMAT = "ffsolve.rnn_forward.gru_classifier/1"


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the key to change."""


class GRUClassifier(nn.Module):
    """A one-layer GRU over a time-major sequence ``(T, B, input_size)``; logits from the last state."""

    def __init__(self, hidden_size: int, input_size: int = 1, classes: int = 10):
        super().__init__()
        self.hidden_size, self.input_size, self.classes = hidden_size, input_size, classes
        self.gru = nn.GRU(input_size, hidden_size)
        self.head = nn.Linear(hidden_size, classes)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(sequence)
        return self.head(states[-1])

    def cell_weights(self) -> dict[str, np.ndarray]:
        """The GRU's weights in ``torch.nn.GRU``'s layout (gates r, z, n), float32 copies."""
        return {name: getattr(self.gru, f"{name}_l0").detach().cpu().numpy().copy()
                for name in WEIGHT_NAMES["gru"]}

    @torch.no_grad()
    def classify(self, last_state: torch.Tensor) -> torch.Tensor:
        """Predicted classes from last states ``(B, H)``, whichever method computed them."""
        return self.head(last_state).argmax(-1)


def save_checkpoint(model: GRUClassifier, path: str | os.PathLike, metadata: dict) -> None:
    """Weights, sizes and plain-typed metadata; loadable with ``torch.load(weights_only=True)``."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "hidden_size": model.hidden_size,
        "input_size": model.input_size,
        "classes": model.classes,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": dict(metadata),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, hidden_size: int | None = None) -> tuple[GRUClassifier, dict]:
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
    model = GRUClassifier(int(payload["hidden_size"]), int(payload["input_size"]), int(payload["classes"]))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the GRU classifier: {err}") from err
    return model.eval(), dict(payload.get("metadata", {}))
