"""Parallel sampling of autoregressive models with a categorical output per position.

An autoregressive model gives, for positions t = 0..T−1, a distribution p_t(· | x_<t) over K
values. One call of the model on a whole draft sequence x̃ returns p_t(· | x̃_<t) for every t at
once; that is what lets a sampler fix several positions per call. :func:`sample_autoregressive`
offers four ways to sample, which differ in what they promise:

* ``sequential``: T calls, call t fixes position t, by Gumbel-max with a noise table G drawn up
  front: x_t = argmax_k(log p_t(k | x_<t) + G_{t,k}). It runs :func:`ffsolve.solve`'s
  ``sequential`` method on that (triangular) Gumbel-max map.
* ``jacobi`` (Song et al. 2021): the same map and noise, iterated in parallel: each call redraws
  every position from the current iterate. The triangular argument makes the prefix before the
  first position that changed final, plus that position: the result is **sample-exact**, the
  ``sequential`` sample for that noise bit for bit.
* ``sjd`` (Speculative Jacobi Decoding, Teng et al. 2025): each position holds a draft x̃_t and the
  draft distribution q_t it was drawn from. A call gives p_t(· | x̃_<t); scanning from the first
  position not yet fixed, x̃_t is accepted with probability min(1, p_t(x̃_t) / q_t(x̃_t)) (a fresh
  uniform). At the first rejection x_t is drawn from the residual max(0, p_t − q_t) (normalised)
  and fixed, and every later position is drafted again from the p just computed (independent
  noise: one uniform a position, by inverse CDF); those p become the new q. **Distribution-exact** (each fixed position is distributed as
  p_t given its fixed prefix: the speculative-sampling argument of Leviathan et al. 2023 and Chen
  et al. 2023), but not any particular sequential sample.
* ``coupled`` (Speculative Coupled Decoding, So et al. 2026): as ``sjd``, but drafts are drawn by
  Gumbel-max from one noise table per absolute position, x̃_t = argmax_k(log q_t(k) + G_{t,k}), so
  a draft changes only when q_t changes enough to move the argmax. Acceptance and the residual
  still use fresh noise. **Distribution-exact**: G_t is read by no decision before position t is
  reached, so a draft is still distributed as its q_t there.

All four fix at least one position per call (the scan's first position is either accepted or
resampled, and fixed), so a row takes at most T steps. Before the first call every position holds
a draft from the uniform distribution (``sjd``: fresh noise; ``jacobi`` and ``coupled``: argmax_k
G_{t,k}, the Gumbel-max draw from the uniform), the initialisation SJD's code uses for positions it
has not drafted yet.
"""

from __future__ import annotations

import contextlib
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ffsolve.solvers.core import NotTriangularWarning, solve

Array = Any

#: The methods and the guarantee each one's samples carry.
GUARANTEES = {
    "sequential": "sample-exact",
    "jacobi": "sample-exact",
    "sjd": "distribution-exact",
    "coupled": "distribution-exact",
}

#: Each guarantee in words.
GUARANTEE_MEANING = {
    "sample-exact": "bit for bit the sequential sample for the same noise table "
                    "(hence distributed as the model)",
    "distribution-exact": "distributed exactly as the model's sequential sampler, "
                          "but not equal to any particular sequential sample",
}


@dataclass
class SampleResult:
    """What :func:`sample_autoregressive` returns; every field is always present.

    Attributes:
        x: the samples, ``(batch, T)`` integers in [0, K) (``torch.long`` on the model's device, or
            NumPy ``int64``).
        method: the method's name.
        guarantee: ``"sample-exact"`` (``sequential``, ``jacobi``) or ``"distribution-exact"``
            (``sjd``, ``coupled``); :data:`GUARANTEE_MEANING` says each in words.
        steps: ``(batch,)`` NumPy ints: the steps each row took until its last position was fixed
            (each step is one model call); always ``<= T``.
        accepted: ``(model_calls, batch)`` NumPy ints: the positions each row fixed in each step
            (accepted drafts, plus the resampled position at a rejection); 0 once a row is done.
            Each row sums to T.
        fixed_at: ``(batch, T)`` NumPy ints: the step (1-based) at which each position was fixed.
        model_calls: calls of the model, each on the whole batch: the largest of ``steps``.
        network_evaluations: work in full passes of the model over the batch; every call
            computes every position, so this equals ``model_calls``.
        sequence_length: T.
        num_classes: K.
        window: the window used (``None``: all remaining positions are scored every step).
        seed: the seed that drove the run's random draws (drawn from the OS and recorded here when
            none was given), so ``sample_autoregressive(..., seed=res.seed)`` repeats it.
        noise: the ``(batch, T, K)`` Gumbel table of ``sequential``, ``jacobi`` and ``coupled``
            (``None`` for ``sjd``, whose noise is fresh every step).
        causality_violation: positions that ``jacobi`` had fixed but whose Gumbel-max value a later
            call changed (0 for a model whose output at t reads only x_<t; above 0, the model is
            not causal along the positions, the sample is not exact, and a
            :class:`ffsolve.NotTriangularWarning` was issued). Only ``jacobi`` can check this.
    """

    x: Array
    method: str
    guarantee: str
    steps: np.ndarray
    accepted: np.ndarray
    fixed_at: np.ndarray
    model_calls: int
    network_evaluations: float
    sequence_length: int
    num_classes: int
    window: int | None
    seed: int | None
    noise: Array | None = field(default=None, repr=False)
    causality_violation: int = 0

    @property
    def mean_steps(self) -> float:
        """Steps per sample, averaged over the batch."""
        return float(np.mean(self.steps))

    @property
    def mean_accepted(self) -> float:
        """Positions fixed per step, averaged over every step of every row (T / steps)."""
        return float(self.sequence_length * len(self.steps) / np.sum(self.steps))


# ---------------------------------------------------------------------------------------------
# The two rules a distribution-exact sampler rests on. Tests replace them (monkeypatch) with
# deliberately wrong ones to show that the distribution test catches a biased sampler.

def _accepts(r, p_draft, q_draft):
    """Accept a draft with probability min(1, p/q): ``r < p/q`` for a uniform r in [0, 1),
    written without a division (a draft with q = 0 is accepted exactly when p > 0)."""
    return r * q_draft < p_draft


def _residual(p, q, ops):
    """The unnormalised residual max(0, p − q) over the last axis (Gumbel-max needs no
    normalisation). Where rounding leaves it all zero (p = q), p itself: no rejection can
    happen there in exact arithmetic."""
    res = ops.maximum0(p - q)
    return ops.where(ops.sum_last(res) > 0, res, p)


# ---------------------------------------------------------------------------------------------
# The few array operations the samplers need, for PyTorch and NumPy.

class _TorchOps:
    name = "torch"

    def __init__(self, device, seed):
        import torch

        self.torch = torch
        self.device = torch.device("cpu" if device is None else device)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(seed)
        self.float = torch.get_default_dtype()

    def is_array(self, a):
        return isinstance(a, self.torch.Tensor)

    def no_grad(self):
        return self.torch.no_grad()

    def uniform(self, shape):
        return self.torch.rand(shape, generator=self.gen, device=self.device, dtype=self.float)

    def gumbel(self, shape):
        u = self.uniform(shape).clamp_min(self.torch.finfo(self.float).tiny)
        return -self.torch.log(-self.torch.log(u))

    def categorical(self, log_p):
        """One draw per row of ``log_p (..., K)`` (normalised log-probabilities) by inverse CDF:
        one uniform per row where Gumbel-max needs K (and two logarithms of each)."""
        c = self.torch.cumsum(self.torch.exp(log_p), -1)
        u = self.uniform(log_p.shape[:-1] + (1,)) * c[..., -1:]
        return self.torch.searchsorted(c.contiguous(), u, right=True)[..., 0].clamp_max(
            log_p.shape[-1] - 1)

    def positions(self, length):
        return self.torch.arange(length, device=self.device)

    def column(self, values):
        return self.torch.as_tensor(values, device=self.device)[:, None]

    def argmax(self, a):
        return a.argmax(-1)

    def gather(self, a, idx):
        return a.gather(-1, idx[..., None])[..., 0]

    def pick(self, a, idx):
        """``a[b, idx[b]]`` for each row b of a (batch, T, ...) array."""
        rows = self.torch.arange(a.shape[0], device=a.device)
        return a[rows, self.torch.as_tensor(idx, device=a.device)]

    def log_softmax(self, a):
        return self.torch.log_softmax(a, -1)

    def exp(self, a):
        return self.torch.exp(a)

    def log(self, a):
        return self.torch.log(a)

    def maximum0(self, a):
        return a.clamp_min(0)

    def sum_last(self, a):
        return a.sum(-1, keepdim=True)

    def min_last(self, a):
        return self.torch.amin(a, -1)

    def full(self, shape, value, like=None):
        dtype = self.float if like is None else like.dtype
        return self.torch.full(shape, value, device=self.device, dtype=dtype)

    def where(self, c, a, b):
        return self.torch.where(c, a, b)

    def host(self, a):
        return a.detach().cpu().numpy()

    def copy(self, a):
        return a.clone()

    def is_floating(self, a):
        return a.is_floating_point()


class _NumPyOps:
    name = "numpy"

    def __init__(self, device, seed):
        self.rng = np.random.default_rng(seed)
        self.float = np.float64

    def is_array(self, a):
        return isinstance(a, np.ndarray)

    def no_grad(self):
        return contextlib.nullcontext()

    def uniform(self, shape):
        return self.rng.random(shape)

    def gumbel(self, shape):
        u = np.maximum(self.uniform(shape), np.finfo(self.float).tiny)
        return -np.log(-np.log(u))

    def categorical(self, log_p):
        """One draw per row of ``log_p (..., K)`` by inverse CDF (see the PyTorch twin): the
        first k whose cumulative probability exceeds a uniform scaled to the row's total."""
        c = np.cumsum(np.exp(log_p), -1)
        u = self.uniform(log_p.shape[:-1] + (1,)) * c[..., -1:]
        return np.minimum((c <= u).sum(-1), log_p.shape[-1] - 1)

    def positions(self, length):
        return np.arange(length)

    def column(self, values):
        return np.asarray(values)[:, None]

    def argmax(self, a):
        return a.argmax(-1)

    def gather(self, a, idx):
        return np.take_along_axis(a, idx[..., None], -1)[..., 0]

    def pick(self, a, idx):
        """``a[b, idx[b]]`` for each row b of a (batch, T, ...) array."""
        return a[np.arange(a.shape[0]), np.asarray(idx)]

    def log_softmax(self, a):
        shifted = a - a.max(-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))

    def exp(self, a):
        return np.exp(a)

    def log(self, a):
        with np.errstate(divide="ignore"):
            return np.log(a)

    def maximum0(self, a):
        return np.maximum(a, 0)

    def sum_last(self, a):
        return a.sum(-1, keepdims=True)

    def min_last(self, a):
        return a.min(-1)

    def full(self, shape, value, like=None):
        return np.full(shape, value, dtype=self.float if like is None else like.dtype)

    def where(self, c, a, b):
        return np.where(c, a, b)

    def host(self, a):
        return np.asarray(a)

    def copy(self, a):
        return a.copy()

    def is_floating(self, a):
        return np.issubdtype(a.dtype, np.floating)


_BACKENDS = {"torch": _TorchOps, "numpy": _NumPyOps}


# ---------------------------------------------------------------------------------------------

def sample_autoregressive(
    model: Callable[[Array], Array],
    length: int,
    num_classes: int,
    method: str = "jacobi",
    *,
    batch: int = 1,
    window: int | None = None,
    seed: int | None = None,
    noise: Array | None = None,
    backend: str | None = None,
    device=None,
) -> SampleResult:
    """Sample ``batch`` sequences of ``length`` categorical values from an autoregressive model.

    Args:
        model: ``model(x)`` takes a ``(batch, T)`` integer array of values in [0, K) (a draft)
            and returns ``(batch, T, K)`` log-probabilities (or logits: they are normalised over
            the last axis), where position t depends only on ``x[:, :t]``: position 0 is the
            model's first distribution, whatever ``x`` holds. A Bernoulli output is K = 2 (logits
            ``[0, l]`` for P(1) = sigmoid(l)). Rows are independent: row b's output may read
            only row b. Called once per step on the whole batch.
        length: T, the positions per sample.
        num_classes: K >= 2, the values per position.
        method: ``"sequential"``, ``"jacobi"``, ``"sjd"`` or ``"coupled"`` (see the table below
            and :mod:`ffsolve.speculative`).
        batch: rows sampled at once; each row runs its own scan and acceptance, and a step is one
            model call for the whole batch (the call repeats finished rows unchanged).
        window: score at most this many positions per step, from each row's first unfixed
            position, as SJD's window: drafts are made again only inside the scored window;
            positions beyond it keep their first (uniform) draft until the window reaches them.
            Caps the positions fixed per step at ``window``. ``None`` (default): every
            remaining position. Not used by ``sequential`` (one position per step).
        seed: an integer that fixes every random draw (the noise table and, for ``sjd`` and
            ``coupled``, the fresh uniforms and Gumbels of every step): the same seed, model and
            arguments give the same samples on the same backend and device. ``None``: a seed is
            drawn from the OS and recorded in the result.
        noise: optional ``(batch, T, K)`` Gumbel table for ``sequential``, ``jacobi`` and
            ``coupled`` (default: drawn from ``seed``); ``res.noise`` returns the one used, so a
            ``jacobi`` sample can be checked against ``sequential`` on the same noise. Refused for
            ``sjd``, whose draft noise is fresh every step.
        backend: ``"torch"`` (default) or ``"numpy"``: the arrays the model receives and the
            samples come back as; taken from ``noise`` when it is given.
        device: PyTorch only: where drafts and noise live (default CPU, or ``noise``'s device).

    ====================  =========================  ==============================================
    method                guarantee                  what a sample is
    ====================  =========================  ==============================================
    ``sequential``        sample-exact               the reference: T calls, Gumbel-max on ``noise``
    ``jacobi``            sample-exact               ``sequential``'s sample for the same noise,
                                                     bit for bit, in at most T calls
    ``sjd``               distribution-exact         a fresh sample of the model's distribution;
                                                     independent drafts from the last call's p
    ``coupled``           distribution-exact         the same, drafts by Gumbel-max from one noise
                                                     table per position (drafts stay stable)
    ====================  =========================  ==============================================

    "Sample-exact" holds, as for :func:`ffsolve.solve`, where the model computes position t's bits
    from ``x[:, :t]`` alone (its output does not round differently with other values at later
    positions or in other rows). "Distribution-exact" is a statement about the sampler's law; it
    needs the model to be causal, not bitwise stable.

    Returns:
        A :class:`SampleResult`: the samples ``x``, the ``guarantee`` they carry, ``steps`` per
        row (each ``<= T``), the positions ``accepted`` per step and row, ``model_calls`` and
        ``network_evaluations`` (work), and the ``seed`` and ``noise`` that reproduce the run.

    Raises:
        ValueError: a bad argument, naming it (an unknown ``method`` lists the valid ones), or a
            model output of the wrong shape or type.

    Example:
        >>> import torch, ffsolve
        >>> P = torch.tensor([[0.9, 0.1], [0.2, 0.8]]).log()      # a two-state Markov chain
        >>> def model(x):                                         # (batch, T) -> (batch, T, 2)
        ...     first = torch.zeros(x.shape[0], 1, 2)              # position 0: uniform
        ...     return torch.cat([first, P[x[:, :-1]]], 1)
        >>> res = ffsolve.sample_autoregressive(model, 16, 2, "coupled", batch=4, seed=0)
        >>> res.guarantee, res.x.shape, bool((res.steps <= 16).all())
        ('distribution-exact', torch.Size([4, 16]), True)
    """
    if not callable(model):
        raise ValueError(f"model must be callable, got {type(model).__name__}")
    length = _positive_int("length", length)
    num_classes = _positive_int("num_classes", num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if method not in GUARANTEES:
        raise ValueError(f"method must be one of {sorted(GUARANTEES)}, got {method!r}")
    batch = _positive_int("batch", batch)
    if window is not None:
        window = _positive_int("window", window)
    if seed is None:
        seed = secrets.randbits(63)
    elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    seed = int(seed)

    if noise is not None:
        if method == "sjd":
            raise ValueError("noise is not used by method 'sjd' (its drafts take fresh noise "
                             "every step); pass seed, or use method 'coupled'")
        inferred = ("torch" if type(noise).__module__.startswith("torch")
                    else "numpy" if isinstance(noise, np.ndarray) else None)
        if inferred is None:
            raise ValueError(f"noise must be a PyTorch tensor or a NumPy array, "
                             f"got {type(noise).__name__}")
        if backend is not None and backend != inferred:
            raise ValueError(f"backend is {backend!r} but noise is a {inferred} array")
        backend = inferred
        if inferred == "torch":
            if device is not None and noise.device != _torch_device(device):
                raise ValueError(f"device is {device!r} but noise is on {noise.device}")
            device = noise.device
    backend = "torch" if backend is None else backend
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {sorted(_BACKENDS)}, got {backend!r}")
    if backend == "numpy" and device is not None:
        raise ValueError(f"device applies to backend 'torch' only, got device={device!r}")
    ops = _BACKENDS[backend](device, seed)

    shape = (batch, length, num_classes)
    if noise is not None:
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape (batch, length, num_classes) = {shape}, "
                             f"got {tuple(noise.shape)}")
        if not ops.is_floating(noise):
            raise ValueError(f"noise must be a floating-point array, got {noise.dtype}")
    elif method != "sjd":
        noise = ops.gumbel(shape)

    call = _checked(model, ops, shape)
    with ops.no_grad():  # sampling is not differentiated: no autograd graph is kept
        if method == "sequential":
            return _sequential(call, ops, noise, shape, seed)
        return _speculative(call, ops, method, noise, shape, window, seed)


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _torch_device(device):
    import torch

    return torch.device(device)


def _checked(model, ops, shape):
    """The model, with its output checked on every call (a cheap shape and type check)."""
    def call(x):
        out = model(x)
        if not ops.is_array(out):
            raise ValueError(f"model must return a {ops.name} array of shape (batch, length, "
                             f"num_classes) = {shape}, got {type(out).__name__}")
        if tuple(out.shape) != shape:
            raise ValueError(f"model must return shape (batch, length, num_classes) = {shape}, "
                             f"got {tuple(out.shape)}")
        if not ops.is_floating(out):
            raise ValueError(f"model must return floating-point log-probabilities, "
                             f"got {out.dtype}")
        return out
    return call


def _sequential(call, ops, noise, shape, seed):
    batch, length, k = shape
    res = solve(lambda x: ops.argmax(call(x) + noise), ops.argmax(noise), method="sequential",
                axis=1)
    fixed_at = np.broadcast_to(np.arange(1, length + 1), (batch, length)).copy()
    return SampleResult(
        x=res.x, method="sequential", guarantee=GUARANTEES["sequential"],
        steps=np.full(batch, length), accepted=np.ones((length, batch), dtype=np.int64),
        fixed_at=fixed_at, model_calls=res.iterations,
        network_evaluations=float(res.network_evaluations), sequence_length=length,
        num_classes=k, window=None, seed=seed, noise=noise,
    )


def _speculative(call, ops, method, noise, shape, window, seed):
    """``jacobi``, ``sjd`` and ``coupled``: one loop, three ways to draft and to decide.

    Each row has a frontier ``a`` (positions < a are fixed). A step calls the model on the current
    drafts and scans each row's window [a, e): the drafts before the first rejection j are
    accepted, position j is fixed to a new value, and positions (j, e) are drafted again from this
    call. ``jacobi``: a draft is accepted when this call's Gumbel-max value equals it (its prefix
    was final, so it was already the sequential value), and position j takes this call's value.
    ``sjd``/``coupled``: the min(1, p/q) test with a fresh uniform, and the residual at j.

    ``sjd``/``coupled`` work on the positions [lo, hi) some row still scores (lo the smallest
    frontier, hi the largest window end): positions before lo are fixed in every row, so the
    distributions there are never read again. The residual is formed at each row's j alone, and
    the draft distributions are kept as log-probabilities. ``jacobi`` computes every position, so
    that it can check that the positions it fixed stay fixed (the causality check).
    """
    batch, length, k = shape
    pos = ops.positions(length)[None, :]
    # First drafts: Gumbel-max from the uniform (fresh noise for sjd, the fixed table otherwise).
    x = ops.argmax(ops.gumbel(shape) if method == "sjd" else noise)
    log_q = None  # the drafts' distributions, in the model's dtype (set at the first call)
    frontier = np.zeros(batch, dtype=np.int64)
    span = length if window is None else window
    accepted, violations = [], 0
    fixed_at = np.zeros((batch, length), dtype=np.int64)
    steps = np.zeros(batch, dtype=np.int64)
    grid = np.arange(length)

    while (frontier < length).any():
        out = call(x)
        if log_q is None and method != "jacobi":  # the first drafts' uniform distribution
            log_q = ops.full(shape, -float(np.log(k)), like=out)
        start = frontier
        end = np.minimum(start + span, length)
        if method == "jacobi":
            a, e = ops.column(start), ops.column(end)
            in_window = (pos >= a) & (pos < e)
            y = ops.argmax(out + noise)
            changed = y != x
            violations += int(ops.host((changed & (pos < a)).sum()))
            rejected = in_window & changed
            first = ops.host(ops.min_last(ops.where(rejected, pos, e)))
            has = first < end
            j = ops.column(first)
            x = ops.where(((pos == j) | ((pos > j) & (pos < e))) & ops.column(has), y, x)
        else:
            lo, hi = int(start.min()), int(end.max())
            span_pos = pos[:, lo:hi]
            a, e = ops.column(start), ops.column(end)
            in_window = (span_pos >= a) & (span_pos < e)
            xs, log_qs = x[:, lo:hi], log_q[:, lo:hi]
            logp = ops.log_softmax(out[:, lo:hi])
            # fresh noise for this step's positions, drawn in the same order every step
            r = ops.uniform((batch, hi - lo))
            ok = _accepts(r, ops.exp(ops.gather(logp, xs)), ops.exp(ops.gather(log_qs, xs)))
            rejected = in_window & ~ok
            first = ops.host(ops.min_last(ops.where(rejected, span_pos, e)))
            has = first < end
            j = ops.column(first)
            at = np.minimum(first, hi - 1) - lo  # each row's j in the slice (any valid index if none)
            g_res = ops.gumbel((batch, k))
            p_j, q_j = ops.exp(ops.pick(logp, at)), ops.exp(ops.pick(log_qs, at))
            fixed_value = ops.argmax(ops.log(_residual(p_j, q_j, ops)) + g_res)
            # sjd: a fresh draw from p by inverse CDF (one uniform a position); coupled: the
            # Gumbel-max of the fixed table, which is what couples its drafts across steps.
            draft = (ops.categorical(logp) if method == "sjd"
                     else ops.argmax(logp + noise[:, lo:hi]))
            at_j = (span_pos == j) & ops.column(has)
            redraft = (span_pos > j) & (span_pos < e) & ops.column(has)
            x = ops.copy(x)
            x[:, lo:hi] = ops.where(at_j, fixed_value[:, None], ops.where(redraft, draft, xs))
            log_q[:, lo:hi] = ops.where(redraft[..., None], logp, log_qs)
        new_frontier = np.where(has, first + 1, end)
        step = len(accepted) + 1
        active = start < length
        steps += active
        accepted.append(new_frontier - start)
        fixed_at[(grid >= start[:, None]) & (grid < new_frontier[:, None])] = step
        frontier = new_frontier

    if violations:
        warnings.warn(
            f"{violations} position(s) that jacobi had fixed changed in a later call: the model's "
            "output at position t reads more than x[:, :t] (a missing causal shift?); the sample "
            "is not exact", NotTriangularWarning, stacklevel=3)
    calls = len(accepted)
    return SampleResult(
        x=x, method=method, guarantee=GUARANTEES[method], steps=steps,
        accepted=np.stack(accepted) if accepted else np.zeros((0, batch), dtype=np.int64),
        fixed_at=fixed_at, model_calls=calls, network_evaluations=float(calls),
        sequence_length=length, num_classes=k, window=window, seed=seed,
        noise=noise, causality_violation=violations,
    )
