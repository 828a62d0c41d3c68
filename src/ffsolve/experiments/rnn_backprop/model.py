"""The vanilla RNN of the paper's backpropagation experiment (Song et al. 2021, §2.1), by hand.

    h_0 = 0,   z_t = W_h h_t + W_x x_t + b_h,   h_{t+1} = softplus(z_t),   o_t = W_o h_t + b_o
    loss = mean over t and batch of (o_t − x_t)²

o_t predicts the *current* input x_t from h_t, which has only seen x_{<t}. Forward and backward
are written out (no autograd) because the backward pass is the thing under study: its adjoint
recursion is the triangular system :mod:`ffsolve.experiments.rnn_backprop.system` solves by BPTT,
Jacobi iteration or a parallel scan. Autograd appears only in :func:`autograd_gradients`, the reference
the tests hold every method to.

Tensors are time-major: inputs ``(T, B, 1)``, states ``(T, B, H)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ffsolve.kit import CheckpointError, write_npz

PARAM_NAMES = ("W_h", "W_x", "b_h", "W_o", "b_o")


@dataclass
class RNNParams:
    """The five parameter tensors; gradients use the same record."""

    W_h: torch.Tensor  # (H, H)
    W_x: torch.Tensor  # (H, 1)
    b_h: torch.Tensor  # (H,)
    W_o: torch.Tensor  # (1, H)
    b_o: torch.Tensor  # (1,)

    @property
    def hidden_size(self) -> int:
        return self.W_h.shape[0]

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in PARAM_NAMES]

    def flat(self, batch_dims: int = 0) -> torch.Tensor:
        """All entries in one vector (``batch_dims`` leading axes kept), for L2 errors."""
        return torch.cat([t.reshape(*t.shape[:batch_dims], -1) for t in self.tensors()], dim=-1)

    def to(self, dtype: Optional[torch.dtype] = None, device=None) -> "RNNParams":
        return RNNParams(*(t.to(device=device, dtype=dtype) for t in self.tensors()))

    def clone(self) -> "RNNParams":
        return RNNParams(*(t.clone() for t in self.tensors()))

    def sgd_step_(self, grads: "RNNParams", lr: float) -> None:
        for p, g in zip(self.tensors(), grads.tensors()):
            p.sub_(g, alpha=lr)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).detach().cpu().numpy() for name in PARAM_NAMES}


def init_params(hidden_size: int, init_std: float, generator: torch.Generator,
                dtype: torch.dtype = torch.float32, device=None) -> RNNParams:
    """The original's initialisation: weights N(0, init_std²), biases zero."""
    def normal(*shape):
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * init_std).to(
            device=device, dtype=dtype)

    def zeros(*shape):
        return torch.zeros(*shape, dtype=dtype, device=device)

    return RNNParams(
        W_h=normal(hidden_size, hidden_size),
        W_x=normal(hidden_size, 1),
        b_h=zeros(hidden_size),
        W_o=normal(1, hidden_size),
        b_o=zeros(1),
    )


def save_checkpoint(model: RNNParams, path: str | Path, metadata: dict | None = None) -> None:
    """The five tensors of ``model`` as a ``.npz`` checkpoint (written atomically); ``metadata``,
    if given, as its ``metadata`` entry (a JSON string)."""
    extra = {} if metadata is None else {"metadata": np.asarray(json.dumps(metadata))}
    write_npz(path, {**model.state_dict(), **extra})


def load_checkpoint(path: str | Path, dtype: torch.dtype = torch.float32, device=None) -> RNNParams:
    """Read a checkpoint written by :func:`save_checkpoint`; says which key is missing or misshaped."""
    with np.load(path) as arrays:
        missing = [name for name in PARAM_NAMES if name not in arrays.files]
        if missing:
            raise CheckpointError(f"RNN checkpoint {path} lacks {missing} (has {arrays.files})")
        params = RNNParams(*(torch.as_tensor(arrays[name]) for name in PARAM_NAMES))
    hidden = params.hidden_size
    expected = {"W_h": (hidden, hidden), "W_x": (hidden, 1), "b_h": (hidden,),
                "W_o": (1, hidden), "b_o": (1,)}
    for name, shape in expected.items():
        if tuple(getattr(params, name).shape) != shape:
            raise CheckpointError(
                f"RNN checkpoint {path}: {name} has shape {tuple(getattr(params, name).shape)}, "
                f"expected {shape} for hidden size {hidden}"
            )
    return params.to(dtype=dtype, device=device)


@dataclass
class ForwardCache:
    """What the backward pass needs from the forward pass."""

    x: torch.Tensor  # (T, B, 1) inputs (also the targets)
    h: torch.Tensor  # (T, B, H) states h_0..h_{T−1}
    gate: torch.Tensor  # (T−1, B, H) softplus'(z_t) = sigmoid(z_t), t = 0..T−2
    err: torch.Tensor  # (T, B, 1) dloss/do_t = 2 (o_t − x_t) / (T B)
    loss: torch.Tensor  # scalar


def forward(params: RNNParams, x: torch.Tensor) -> ForwardCache:
    """The sequential forward pass (T−1 steps) and the loss, keeping what backward needs."""
    if x.ndim != 3 or x.shape[2] != 1:
        raise ValueError(f"x must be time-major (T, B, 1), got shape {tuple(x.shape)}")
    length, batch, _ = x.shape
    hidden = params.hidden_size
    # The input term of every step at once: it does not depend on the recursion.
    drive = torch.addmm(params.b_h, x.reshape(-1, 1), params.W_x.T).reshape(length, batch, hidden)
    h = x.new_zeros(length, batch, hidden)
    z = x.new_empty(max(length - 1, 0), batch, hidden)
    w_h_t = params.W_h.T
    for t in range(length - 1):
        torch.addmm(drive[t], h[t], w_h_t, out=z[t])
        h[t + 1] = F.softplus(z[t])
    out = h @ params.W_o.T + params.b_o
    diff = out - x
    scale = 2.0 / diff.numel()
    return ForwardCache(x=x, h=h, gate=torch.sigmoid(z), err=diff * scale,
                        loss=(diff * diff).mean())


def direct_adjoints(params: RNNParams, cache: ForwardCache) -> torch.Tensor:
    """g_t = ∂loss/∂h_t through o_t alone, ``(T, B, H)``: the inhomogeneous term of the recursion."""
    return cache.err @ params.W_o


def gradients_from_adjoints(params: RNNParams, cache: ForwardCache, adjoints: torch.Tensor,
                            per_example: bool = False) -> RNNParams:
    """All parameter gradients from the adjoints a_t = dloss/dh_t, ``(T, B, H)``.

    δ_t = sigmoid(z_t) ⊙ a_{t+1} is dloss/dz_t; each weight's gradient sums its outer products.
    With ``per_example`` the batch axis is kept and each item's gradient is that of its own loss
    (the batch mean is undone), for per-data-point convergence curves.
    """
    delta = cache.gate * adjoints[1:]
    h, x, err = cache.h, cache.x, cache.err
    if not per_example:
        return RNNParams(
            W_h=torch.einsum("tbi,tbj->ij", delta, h[:-1]),
            W_x=torch.einsum("tbi,tbj->ij", delta, x[:-1]),
            b_h=delta.sum(dim=(0, 1)),
            W_o=torch.einsum("tbo,tbh->oh", err, h),
            b_o=err.sum(dim=(0, 1)),
        )
    batch = x.shape[1]
    return RNNParams(
        W_h=torch.einsum("tbi,tbj->bij", delta, h[:-1]) * batch,
        W_x=torch.einsum("tbi,tbj->bij", delta, x[:-1]) * batch,
        b_h=delta.sum(dim=0) * batch,
        W_o=torch.einsum("tbo,tbh->boh", err, h) * batch,
        b_o=err.sum(dim=0) * batch,
    )


def autograd_gradients(params: RNNParams, x: torch.Tensor) -> tuple[RNNParams, torch.Tensor]:
    """The reference: the same model and loss through PyTorch autograd (``nn.RNN``-free)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in params.tensors()]
    w_h, w_x, b_h, w_o, b_o = leaves
    length, batch, _ = x.shape
    h = x.new_zeros(batch, params.hidden_size)
    outputs = []
    for t in range(length):
        outputs.append(h @ w_o.T + b_o)
        if t < length - 1:
            h = F.softplus(h @ w_h.T + x[t] @ w_x.T + b_h)
    loss = ((torch.stack(outputs) - x) ** 2).mean()
    # T = 1 never uses the recurrence, so its weights get no gradient: report zeros.
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]
    return RNNParams(*grads), loss.detach()
