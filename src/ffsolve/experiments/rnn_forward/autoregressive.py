"""The next-pixel GRU as an autoregressive model for :func:`ffsolve.sample_autoregressive`.

The experiment that owns a model says how to read it as one: ``load(checkpoint, device=...)``
returns an object whose call on a whole draft ``x`` (``(batch, T)`` pixels in {0, 1}) gives every
position's distribution at once, a teacher-forced pass: the GRU reads ``u_t = x_{t-1}`` (``u_0 =
0``, as in training) and its readout's logit ``l_t`` gives P(x_t = 1) = sigmoid(l_t), returned as
the two-class logits ``[0, l_t]``. Position t reads only ``x[:, :t]``. The speculative experiment
(``ffsolve.experiments.speculative``) samples it without importing this experiment.
"""

from __future__ import annotations

import torch

from ffsolve.experiments.rnn_forward.model import load_checkpoint

FRAMEWORK = "torch"  # what load()'s device is: a torch device
LENGTH = 784  # 28 x 28 binarized MNIST pixels in raster order, as trained


class NextPixelDistributions:
    """``model(x)``: ``(batch, T)`` integer pixels -> ``(batch, T, 2)`` logits ``[0, l_t]``."""

    backend = "torch"
    num_classes = 2

    def __init__(self, net, *, length: int = LENGTH, device="cpu", checkpoint: str = ""):
        self.net = net.to(device).eval()
        self.length = int(length)
        self.device = torch.device(device)
        self.description = {"model": "next_pixel_gru", "hidden_size": int(net.hidden_size),
                            "checkpoint": str(checkpoint), "positions": self.length,
                            "values": "binarized pixel {0, 1}"}

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, length = x.shape
        inputs = torch.zeros(length, batch, 1, device=x.device)
        inputs[1:, :, 0] = x[:, :-1].T.to(inputs.dtype)
        logit = self.net(inputs).T  # (batch, T): the logit of pixel t from pixels < t
        return torch.stack([torch.zeros_like(logit), logit], -1)


def load(checkpoint, *, device="cpu", length: int | None = None) -> NextPixelDistributions:
    """The GRU of ``checkpoint`` (written by ``rnn_forward_train``) on ``device``, over ``length``
    positions (default :data:`LENGTH`, as trained)."""
    net, _ = load_checkpoint(checkpoint)
    return NextPixelDistributions(net, length=LENGTH if length is None else length, device=device,
                                  checkpoint=str(checkpoint))
