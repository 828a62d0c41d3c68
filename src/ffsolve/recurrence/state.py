"""States as the user holds them, and as the solvers hold them.

A recurrence's state may be one array ``(*batch, H)`` or a tuple, list, dict or namedtuple of
such arrays (an LSTM's ``(h, c)``, a Flax cell's carry). The solvers work on one array: the
leaves concatenated along their last axis, ``(*batch, H_1 + H_2 + ...)``. Concatenating and
splitting only copy numbers, so a step called through :meth:`StateLayout.flat_step` computes
exactly the bits the user's step computes on the user's own state.

A step may return the new state, or a ``(new_state, output)`` pair as ``flax.linen`` cells
do; :meth:`StateLayout.state_of` takes the state from either, and names what it got otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Array = Any


def is_array(a) -> bool:
    return hasattr(a, "shape") and hasattr(a, "dtype") and not isinstance(a, (tuple, list, dict))


def _structure(tree):
    """(structure, leaves) of a tuple/list/dict/namedtuple tree of arrays."""
    if is_array(tree):
        return "*", [tree]
    if isinstance(tree, Mapping):
        keys = list(tree)
        parts = [_structure(tree[k]) for k in keys]
        return ("dict", tuple(keys), tuple(p[0] for p in parts)), [leaf for p in parts for leaf in p[1]]
    if isinstance(tree, (tuple, list)):
        parts = [_structure(t) for t in tree]
        kind = type(tree) if hasattr(tree, "_fields") else type(tree).__name__
        return (kind, tuple(p[0] for p in parts)), [leaf for p in parts for leaf in p[1]]
    raise TypeError(f"a state must be an array or a tuple/list/dict of arrays, got "
                    f"{type(tree).__name__}")


def _build(structure, leaves):
    if structure == "*":
        return next(leaves)
    if structure[0] == "dict":
        _, keys, subs = structure
        return {k: _build(s, leaves) for k, s in zip(keys, subs)}
    kind, subs = structure
    items = [_build(s, leaves) for s in subs]
    if kind == "tuple":
        return tuple(items)
    if kind == "list":
        return items
    return kind(*items)  # a namedtuple


def describe(tree) -> str:
    """A short description of a state or a step's return value, for error messages."""
    if is_array(tree):
        return f"{type(tree).__name__} of shape {tuple(tree.shape)}"
    if isinstance(tree, Mapping):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in tree.items()) + "}"
    if isinstance(tree, (tuple, list)):
        inner = ", ".join(describe(t) for t in tree)
        return f"({inner})" if isinstance(tree, tuple) else f"[{inner}]"
    return type(tree).__name__


class StateLayout:
    """How the user's state maps to the solvers' one array ``(*batch, sum of H_i)``."""

    def __init__(self, s0):
        try:
            self.structure, leaves = _structure(s0)
        except TypeError as err:
            raise ValueError(f"s0 must be an array (a torch.Tensor, jax.Array or numpy.ndarray) "
                             f"or a tuple/list/dict of them, got {describe(s0)}") from err
        if not leaves:
            raise ValueError("s0 holds no arrays")
        first = leaves[0]
        if first.ndim < 1:
            raise ValueError("s0 must have shape (*batch, H) with at least the state axis H")
        self.batch = tuple(first.shape[:-1])
        for leaf in leaves:
            if type(leaf) is not type(first) or leaf.dtype != first.dtype:
                raise ValueError(f"every array of s0 must have one type and dtype; got "
                                 f"{describe(s0)} with dtypes {[str(a.dtype) for a in leaves]}")
            if leaf.ndim < 1 or tuple(leaf.shape[:-1]) != self.batch:
                raise ValueError(f"every array of s0 must have shape (*batch, H_i) with one batch "
                                 f"shape; got {describe(s0)}")
        self.sizes = [int(leaf.shape[-1]) for leaf in leaves]
        self.single = self.structure == "*"
        self.example = s0

    @property
    def hidden(self) -> int:
        return sum(self.sizes)

    def leaves(self, tree) -> list:
        return _structure(tree)[1]

    def flat(self, tree):
        """The state's leaves concatenated along the last axis (the state itself if one array)."""
        if self.single:
            return tree
        leaves = self.leaves(tree)
        return _concat(leaves)

    def unflat(self, a):
        """The user's state from the solvers' array (any leading shape)."""
        if self.single:
            return a
        pieces, start = [], 0
        for size in self.sizes:
            pieces.append(a[..., start:start + size])
            start += size
        return _build(self.structure, iter(pieces))

    def state_of(self, out):
        """The new state from what a step returned: the state, or a ``(state, output)`` pair."""
        if self._matches(out):
            return out
        if isinstance(out, tuple) and len(out) == 2 and self._matches(out[0]):
            return out[0]
        raise TypeError(
            f"step returned {describe(out)}; expected the new state, structured like s0 "
            f"({describe(self.example)}), or a (new_state, output) pair as flax.linen cells return")

    def _matches(self, out) -> bool:
        try:
            structure, leaves = _structure(out)
        except TypeError:
            return False
        return structure == self.structure and all(is_array(a) for a in leaves)

    def flat_step(self, step: Callable) -> Callable:
        """``step`` as a function of the solvers' array: ``(*lead, H) × (*lead, D) -> (*lead, H)``."""
        if self.single:
            def flat_single(s, u):
                return self.state_of(step(s, u))

            return flat_single

        def flat_tree(s, u):
            return self.flat(self.state_of(step(self.unflat(s), u)))

        return flat_tree


def _concat(leaves):
    first = leaves[0]
    if type(first).__module__.startswith("torch"):
        import torch

        return torch.cat(leaves, -1)
    if type(first).__module__.startswith("numpy"):
        import numpy as np

        return np.concatenate(leaves, -1)
    import jax.numpy as jnp

    return jnp.concatenate(leaves, -1)
