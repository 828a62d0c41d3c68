"""A DenseNet's inference as a triangular system over its dense layers, solved by ``ffsolve.solve``.

The unknowns are the outputs of all T dense layers of the network (98 for DenseNet-201), in
order. Layer t of block b reads the block's input — the stem, or the transition applied to the
previous block's concatenated features — and the block's layers before t, so output t depends
only on unknowns < t: the system is lower-triangular and its fixed point is the forward pass.

* ``sequential``: the model's ordinary forward pass, one layer after the other.
* ``jacobi``: the original's scheme: one call of the map updates every dense layer of every block
  from the previous iterate (one batched call per dense block; transitions recomputed from the
  iterate), through ``ffsolve.solve(..., method="jacobi")`` on a ``(T, N, D)`` state.
* ``gs_jacobi``: layers grouped into blocks of at most ``block_size`` consecutive layers that never
  straddle a dense block; groups are solved in order (Gauss-Seidel), each by ``ffsolve.solve``
  with Jacobi on a map that computes only that group's layers (the fast path: a call costs one
  group, not the whole network). Iterations are calls of the group maps, summed.

Every method returns the logits and the number of calls; ``on_call`` hooks see each new iterate
(used for traces and per-call timestamps, never inside timed runs that do not ask for them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

import ffsolve
from ffsolve.models.densenet import DenseNet, PackedLayers, pack_layers, parallel_layers

# on_call(global_state) for traces; called after every call of a map, with the new iterate.
OnCall = Optional[Callable[[Tensor], None]]
# tick(output) for per-call timestamps in timed runs: cheap, sees only the map's output.
Tick = Optional[Callable[[Tensor], None]]


@dataclass
class Outcome:
    logits: Tensor
    iterations: int  # calls of the layer maps (parallel steps)
    converged: bool  # exact by ffsolve's rule (tol=0) before the call budget ran out
    state: Tensor  # (T, N, D) outputs of every dense layer, flattened and zero-padded to D


class LayerSystem:
    """The dense layers of ``model`` (eval mode) as one triangular system.

    Packing the weights (:func:`pack_layers`) is done here once, like compiling a model; the
    timed calls below reuse it.
    """

    def __init__(self, model: DenseNet, block_size: Optional[int] = None):
        if model.training:
            raise ValueError("LayerSystem needs the model in eval mode (call model.eval())")
        self.model = model
        self.blocks = model.dense_blocks()
        self.transitions = model.transitions()
        self.counts = [block.num_layers for block in self.blocks]
        self.offsets = [sum(self.counts[:b]) for b in range(len(self.counts))]
        self.length = sum(self.counts)
        self.growth = self.blocks[0].growth_rate
        with torch.no_grad():
            self.whole = [pack_layers(block) for block in self.blocks]
        self.block_size = block_size
        self.groups: list[list[PackedLayers]] = []
        if block_size is not None:
            if block_size < 1:
                raise ValueError(f"block_size must be a positive integer, got {block_size}")
            with torch.no_grad():
                self.groups = [
                    [pack_layers(block, s, min(block_size, block.num_layers - s))
                     for s in range(0, block.num_layers, block_size)]
                    for block in self.blocks
                ]

    # -- state layout ----------------------------------------------------------------------------
    def spatial(self, stem: Tensor) -> list[tuple[int, int]]:
        """(H, W) of each dense block for a stem output (each transition halves, floor)."""
        h, w = stem.shape[-2:]
        sizes = []
        for _ in self.blocks:
            sizes.append((h, w))
            h, w = h // 2, w // 2
        return sizes

    def zeros(self, stem: Tensor) -> Tensor:
        """The initial guess: every layer output zero, as in the original."""
        h, w = self.spatial(stem)[0]
        return stem.new_zeros(self.length, stem.shape[0], self.growth * h * w)

    def view(self, state: Tensor, b: int, sizes) -> Tensor:
        """Block ``b``'s layers of ``state`` as ``(L_b, N, growth, H_b, W_b)`` (a view)."""
        h, w = sizes[b]
        rows = state[self.offsets[b]: self.offsets[b] + self.counts[b], :, : self.growth * h * w]
        return rows.unflatten(-1, (self.growth, h, w))

    @staticmethod
    def channels(layers: Tensor) -> Tensor:
        """``(K, N, g, H, W)`` layer outputs as ``(N, K*g, H, W)`` channels, in layer order."""
        count, n, g, h, w = layers.shape
        return layers.permute(1, 0, 2, 3, 4).reshape(n, count * g, h, w)

    @classmethod
    def concat(cls, prefix: Tensor, layers: Tensor) -> Tensor:
        """Block features: ``prefix`` then each layer's output, along channels."""
        return torch.cat([prefix, cls.channels(layers)], 1)

    # -- the maps --------------------------------------------------------------------------------
    def jacobi_map(self, stem: Tensor) -> Callable[[Tensor], Tensor]:
        """The triangular map over all T layers: every layer updated from the iterate."""
        sizes = self.spatial(stem)

        def f(state: Tensor) -> Tensor:
            out = torch.zeros_like(state)
            block_input = stem
            for b, packed in enumerate(self.whole):  # a loop over dense blocks, not layers
                layers = self.view(state, b, sizes)
                new = parallel_layers(packed, block_input, layers)
                h, w = sizes[b]
                out[self.offsets[b]: self.offsets[b] + self.counts[b], :, : self.growth * h * w] = (
                    new.flatten(2)
                )
                if b < len(self.transitions):
                    # From the *iterate*, not from ``new``: a Jacobi step reads only x_{k-1}.
                    block_input = self.transitions[b](self.concat(block_input, layers))
            return out

        return f

    def readout(self, stem: Tensor, state: Tensor) -> Tensor:
        """Logits of an iterate: transitions and classifier applied to its layer outputs."""
        sizes = self.spatial(stem)
        block_input = stem
        for b in range(len(self.blocks)):
            features = self.concat(block_input, self.view(state, b, sizes))
            if b < len(self.transitions):
                block_input = self.transitions[b](features)
        return self.model.head(features)

    # -- the methods -------------------------------------------------------------------------------
    @torch.no_grad()
    def sequential(self, x: Tensor) -> Tensor:
        """The ordinary forward pass."""
        return self.model(x)

    @torch.no_grad()
    def jacobi(self, x: Tensor, max_iters: Optional[int] = None, on_call: OnCall = None,
               tick: Tick = None) -> Outcome:
        stem = self.model.stem(x)
        f = self.jacobi_map(stem)
        if on_call is not None:
            f = _observed(f, on_call)
        if tick is not None:
            f = _observed(f, tick)
        res = ffsolve.solve(f, self.zeros(stem), method="jacobi", tol=0.0, max_iters=max_iters)
        return Outcome(self.readout(stem, res.x), res.iterations, res.converged, res.x)

    @torch.no_grad()
    def gs_jacobi(self, x: Tensor, max_iters: Optional[int] = None, on_call: OnCall = None,
                  tick: Tick = None) -> Outcome:
        """Groups of layers in order, Jacobi inside each; ``max_iters`` caps the calls in total."""
        if not self.groups:
            raise ValueError("gs_jacobi needs a LayerSystem built with block_size")
        stem = self.model.stem(x)
        sizes = self.spatial(stem)
        state = self.zeros(stem)
        budget = self.length if max_iters is None else max_iters
        calls, converged = 0, True
        block_input = stem
        for b, groups in enumerate(self.groups):
            layers = self.view(state, b, sizes)  # writes below land in ``state``
            prefix = block_input
            for packed in groups:
                rows = slice(packed.first, packed.first + packed.count)
                if calls >= budget:
                    converged = False
                    break
                f = _group_map(packed, prefix)
                if on_call is not None:
                    f = _observed(f, _placing(on_call, state, layers, rows))
                if tick is not None:
                    f = _observed(f, tick)
                res = ffsolve.solve(
                    f, torch.zeros_like(layers[rows]), method="jacobi", tol=0.0,
                    max_iters=budget - calls,
                )
                calls += res.iterations
                converged = converged and res.converged
                layers[rows] = res.x
                prefix = self.concat(prefix, res.x)
            if not converged:
                break  # budget spent: later layers stay zero, as in the iterate a trace shows
            if b < len(self.transitions):
                block_input = self.transitions[b](prefix)
        return Outcome(self.readout(stem, state), calls, converged and calls <= budget, state)

    def run(self, method: str, x: Tensor, max_iters: Optional[int] = None, on_call: OnCall = None,
            tick: Tick = None):
        """``sequential`` -> logits; ``jacobi``/``gs_jacobi`` -> :class:`Outcome`."""
        if method == "sequential":
            return self.sequential(x)
        if method == "jacobi":
            return self.jacobi(x, max_iters, on_call, tick)
        if method == "gs_jacobi":
            return self.gs_jacobi(x, max_iters, on_call, tick)
        raise ValueError(f"densenet methods are sequential, jacobi and gs_jacobi; got {method!r}")

    @torch.no_grad()
    def prefix_states(self, exact: Tensor):
        """The sequential iterates: after t layers of the forward pass, layers >= t still zero."""
        for t in range(self.length + 1):
            state = exact.clone()
            state[t:] = 0
            yield state


def _group_map(packed: PackedLayers, prefix: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda layers: parallel_layers(packed, prefix, layers)


def _observed(f: Callable[[Tensor], Tensor], hook: Callable[[Tensor], None]):
    """``f`` that also hands each output (the solver's next iterate under Jacobi) to ``hook``."""

    def wrapped(x: Tensor) -> Tensor:
        y = f(x)
        hook(y)
        return y

    return wrapped


def _placing(on_call, state: Tensor, layers: Tensor, rows: slice):
    """A hook that shows ``on_call`` the whole network's iterate with one group's guess in place."""

    def hook(group: Tensor) -> None:
        saved = layers[rows].clone()
        layers[rows] = group
        on_call(state)
        layers[rows] = saved

    return hook
