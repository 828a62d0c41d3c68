"""The few array operations the solvers need, for NumPy, PyTorch and JAX alike.

The solvers are written against the Array API standard (through ``array-api-compat``); the only
operation the standard cannot express the same way for every library is writing into a slice,
because JAX arrays are immutable. That one difference lives here.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

Array = Any


def namespace(x: Array):
    """The Array API namespace of ``x``; a clear error for anything that is not an array."""
    try:
        return array_api_compat.array_namespace(x)
    except TypeError as err:
        raise ValueError(
            f"x0 must be a NumPy, PyTorch or JAX array, got {type(x).__name__}"
        ) from err


def is_jax(x: Array) -> bool:
    return array_api_compat.is_jax_array(x)


def is_torch(x: Array) -> bool:
    return array_api_compat.is_torch_array(x)


def index_along(axis: int, ndim: int, index: slice) -> tuple:
    """A tuple index that applies ``index`` along ``axis`` and takes everything elsewhere."""
    return (slice(None),) * axis + (index,) + (slice(None),) * (ndim - axis - 1)


def fresh_copy(x: Array) -> Array:
    """A copy the solver may write into without touching the caller's array."""
    if is_jax(x):
        return x  # immutable: every write makes a new array anyway
    if array_api_compat.is_torch_array(x):
        return x.clone()
    return x.copy()


def write(x: Array, index: tuple, values: Array) -> Array:
    """``x[index] = values``, returned; in place for NumPy and PyTorch, functional for JAX."""
    if is_jax(x):
        return x.at[index].set(values)
    x[index] = values
    return x


def max_abs(xp, a: Array) -> float:
    """max |a| as a Python float (0.0 for an empty array). Forces a device sync on GPU."""
    if array_api_compat.size(a) == 0:
        return 0.0
    return float(xp.max(xp.abs(a)))


def prefix_max_abs(xp, diff: Array, count: int, axis: int) -> float:
    """max |diff| over the first ``count`` positions along ``axis`` (0.0 when ``count`` <= 0).

    JAX compiles every eager op once per shape: slicing a prefix whose length changes every step
    compiled thousands of programs in one PixelCNN++ solve. There the reduction runs over the
    whole array (one shape) to a per-position vector, and the prefix is taken on the host."""
    if count <= 0 or array_api_compat.size(diff) == 0:
        return 0.0
    if not is_jax(diff):
        prefix = tuple(slice(0, count) if i == axis else slice(None) for i in range(diff.ndim))
        return max_abs(xp, diff[prefix])
    other = tuple(i for i in range(diff.ndim) if i != axis)
    per_position = to_numpy(xp.max(xp.abs(diff), axis=other) if other else xp.abs(diff))
    return float(per_position[:count].max())


def first_moving(xp, diff: Array, axis: int, tol: float) -> int:
    """The first position along ``axis`` where |diff| exceeds ``tol`` anywhere (the length along
    ``axis`` when none does): the end of a solve's settled prefix."""
    length = diff.shape[axis]
    if array_api_compat.size(diff) == 0:
        return length
    other = tuple(i for i in range(diff.ndim) if i != axis)
    per_position = xp.max(xp.abs(diff), axis=other) if other else xp.abs(diff)
    moving = to_numpy(per_position) > tol
    return int(moving.argmax()) if moving.any() else length


def to_numpy(a: Array):
    """A host NumPy copy of ``a`` (for traces and iterates kept for plots)."""
    import numpy as np

    if array_api_compat.is_torch_array(a):
        return a.detach().cpu().numpy()
    return np.asarray(a)
