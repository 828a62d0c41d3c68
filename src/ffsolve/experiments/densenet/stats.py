"""Per-iteration statistics of DenseNet solves: logit errors and *descending* top-k agreement.

Two corrections to the original notebook (reference §2.2): top-k means the k highest logits in
descending order (the original's ascending argsort compared the five lowest classes), and an
image counts as converged at the first iteration from which its top-k list *stays* equal to the
reference's until the end (the original took the first match, ignoring later relapses).
"""

from __future__ import annotations

import numpy as np

NEVER = -1  # stable_from's value for an image whose last iterate still disagrees


def topk(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest logits along the last axis, largest first.

    Ties are broken by the lower class index (stable sort of the negated logits), so the order
    is deterministic.
    """
    if k < 1 or k > logits.shape[-1]:
        raise ValueError(f"k must be in 1..{logits.shape[-1]}, got {k}")
    return np.argsort(-logits, axis=-1, kind="stable")[..., :k]


def topk_mismatch(trace: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """``(K+1, N)`` bool: does iterate k's ordered top-k list differ from the reference's?

    Args:
        trace: ``(K+1, N, C)`` logits of every iterate.
        reference: ``(N, C)`` logits of the ordinary forward pass.
    """
    return np.any(topk(trace, k) != topk(reference, k)[None], axis=-1)


def stable_from(mismatch: np.ndarray) -> np.ndarray:
    """``(N,)``: the first iteration from which each image agrees through the last iterate.

    ``NEVER`` (-1) where even the last iterate disagrees.
    """
    agree = ~np.asarray(mismatch, dtype=bool)
    # Suffix-and over iterations: agree_from[k] is True when iterates k..K all agree.
    agree_from = np.flip(np.cumprod(np.flip(agree, 0), axis=0), 0).astype(bool)
    first = np.argmax(agree_from, axis=0)
    return np.where(agree_from[-1], first, NEVER)


def batch_stable_iteration(mismatch: np.ndarray) -> int:
    """The iteration from which *every* image stays in agreement (``NEVER`` if one never does)."""
    per_image = stable_from(mismatch)
    return NEVER if np.any(per_image == NEVER) else int(per_image.max(initial=0))


def logit_norms(trace: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(K+1, N)`` L2 error to the reference logits and ``(K, N)`` forward difference."""
    trace = trace.astype(np.float64)
    error = np.linalg.norm(trace - reference[None].astype(np.float64), axis=-1)
    change = np.linalg.norm(np.diff(trace, axis=0), axis=-1)
    return error, change


def pad_to(values: np.ndarray, length: int) -> np.ndarray:
    """Repeat the last entry along axis 0 up to ``length`` (a finished solve stays where it is)."""
    if len(values) >= length:
        return values[:length]
    tail = np.repeat(values[-1:], length - len(values), axis=0)
    return np.concatenate([values, tail], axis=0)


def as_optional(iteration: int):
    """``None`` for :data:`NEVER`, else the iteration as a plain int (for records)."""
    return None if iteration == NEVER else int(iteration)


def topk_agreement(logits: np.ndarray, reference: np.ndarray, k: int) -> dict:
    """How many images' top-k agree with the reference's, ``logits`` and ``reference`` ``(N, C)``.

    ``ordered``: the fraction of images whose descending top-k list equals the reference's;
    ``as_set``: the fraction whose top-k classes are the same set (order ignored). k is cut to C.
    """
    logits, reference = np.asarray(logits), np.asarray(reference)
    if logits.shape != reference.shape or logits.ndim != 2:
        raise ValueError(f"logits {logits.shape} and reference {reference.shape} must both be (N, C)")
    k = min(k, reference.shape[-1])
    ours, theirs = topk(logits, k), topk(reference, k)
    ordered = np.all(ours == theirs, axis=-1)
    as_set = np.all(np.sort(ours, axis=-1) == np.sort(theirs, axis=-1), axis=-1)
    return {"ordered": float(ordered.mean()), "as_set": float(as_set.mean())}
