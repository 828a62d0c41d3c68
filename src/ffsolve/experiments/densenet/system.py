"""A DenseNet's inference as a triangular system over its dense layers, and every way to solve it.

The unknowns are the outputs of all T dense layers of the network (98 for DenseNet-201), in
order. Layer t of dense block b reads the block's input (the stem, or the transition applied to
the previous block's concatenated features) and the block's layers before t, so output t depends
only on unknowns < t: the system is lower-triangular and its fixed point is the forward pass.

Every method is a program returning an :class:`ffsolve.SolveResult` whose ``x`` is the **logits**
``(N, classes)``: the output the harness compares with the reference. ``iterations`` counts
parallel steps, ``network_evaluations`` the dense layers computed divided by T:

* ``sequential`` (the reference, :func:`forward_candidate`): the model's own ``forward`` (eval
  mode, ``torch.no_grad``), one dense layer after the other, each layer its own 1×1 and 3×3
  convolution; no solver, no packed weights, no Jacobi state. T steps, one network evaluation.
* ``jacobi``: ``ffsolve.solve(f, method="jacobi")`` on the full map ``f`` (:meth:`LayerSystem.
  jacobi_map`): one call updates every dense layer of every dense block from the previous
  iterate, one batched call per dense block (transitions recomputed from the iterate). A call is
  one parallel step and computes all T layers, so ``network_evaluations == iterations``.
* ``jacobi_top5`` (time to a stable top-5, quantity ``time_to_top5``): the same Jacobi loop,
  written out here (:meth:`LayerSystem.jacobi_top5`) because it stops on a rule that looks only
  at its own iterates (:class:`Top5Patience`): after each step the iterate's logits are read out
  and it stops once every image's descending top-5 list has stayed the same for ``patience``
  consecutive steps, or at the fixed point, or after T steps. The readouts (transitions and
  classifier, no dense layer) run inside the timed loop; the forward pass is never consulted.
* ``gs_jacobi`` (the fast path): the layers of each dense block are cut into groups of at most
  ``block_size`` consecutive layers (a group never straddles a dense block). Groups are solved in
  order (Gauss–Seidel), each by ``ffsolve.solve(method="jacobi")`` on a map that computes only
  that group's K layers, all K in **one batched call** (masked batched 1×1 convolution, grouped
  3×3 convolution; :func:`parallel_layers`). **One such call is one parallel step, whatever K
  is**; ``iterations`` is the number of calls of all groups together (a group of K layers needs at
  most K calls, so ``iterations <= T``), and ``network_evaluations`` is Σ calls × K / T.

The batched step sums in another order than the per-layer convolutions (other shapes, zero-padded
weights, grouped instead of single convolutions), so the parallel methods equal the forward pass
only to within float32 rounding: :func:`logit_tolerance` derives the bound the harness checks.
Among themselves, all of ``ffsolve``'s methods on the *same* map agree bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

import ffsolve
from ffsolve.experiments.densenet import stats
from ffsolve.kit import AUTO, Candidate, RunSpec, Tolerance, hard_part, passed, progress
from ffsolve.experiments.densenet.model import (
    DenseNet,
    PackedLayers,
    pack_layers,
    parallel_layers,
)
from ffsolve.experiments.densenet.layout import BLOCKED

METHODS = ("sequential", "jacobi", "jacobi_top5", "gs_jacobi")
EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7, the spacing of float32 numbers at 1

# on_call(global_state) for traces: called after every call of a map, with the new iterate.
OnCall = Callable[[Tensor], None] | None


class Top5Patience:
    """The early-stopping rule of ``jacobi_top5``: it sees only the solver's own iterates.

    :meth:`observe` takes the logits ``(N, C)`` of each iterate in turn (iterate 0 first) and
    returns True once every image's top-k list (the k = min(5, C) highest logits, highest first,
    ``torch.topk``) has been the same for ``patience`` consecutive steps, i.e. iterates
    ``j - patience .. j`` all have the same lists. It never sees the forward pass's answer: a
    list that has settled on a wrong class stops it all the same (the record then says how many
    images were right).
    """

    def __init__(self, patience: int, k: int = 5):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"densenet.top5_patience must be a positive integer, got {patience!r}")
        self.patience = patience
        self.k = k
        self.previous: Tensor | None = None
        self.unchanged = 0  # consecutive steps without a change of any image's list

    def observe(self, logits: Tensor) -> bool:
        top = torch.topk(logits, min(self.k, logits.shape[-1]), dim=-1, sorted=True).indices
        if self.previous is not None and torch.equal(top, self.previous):
            self.unchanged += 1
        else:
            self.unchanged = 0
        self.previous = top
        return self.unchanged >= self.patience


class LayerSystem:
    """The dense layers of ``model`` (eval mode) as one triangular system.

    Packing the weights (:func:`pack_layers`) is done here once, like compiling a model; the
    timed calls reuse it.
    """

    def __init__(self, model: DenseNet, block_size: int | None = None,
                 top5_patience: int | None = None):
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
        if top5_patience is not None:
            Top5Patience(top5_patience)  # checks the value
        self.top5_patience = top5_patience
        self.groups: list[list[PackedLayers]] = []
        if block_size is not None:
            if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
                raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
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
        """The initial guess: every layer output zero, as in the original. ``(T, N, D)``, each
        layer's output flattened and zero-padded to the width D of the first block's."""
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

    @torch.no_grad()
    def forward_state(self, x: Tensor) -> Tensor:
        """The exact layer outputs ``(T, N, D)``, computed layer by layer as the forward pass does."""
        stem = self.model.stem(x)
        sizes = self.spatial(stem)
        state = self.zeros(stem)
        block_input = stem
        for b, block in enumerate(self.blocks):
            layers = self.view(state, b, sizes)
            features = [block_input]
            for i, layer in enumerate(block.values()):
                features.append(layer(torch.cat(features, 1)))
                layers[i] = features[-1]
            if b < len(self.transitions):
                block_input = self.transitions[b](torch.cat(features, 1))
        return state

    # -- the methods: each returns a SolveResult whose x is the logits ----------------------------
    def _result(self, logits, method, iterations, converged, evaluations,
                stopped_by=None) -> ffsolve.SolveResult:
        return ffsolve.SolveResult(
            x=logits, iterations=int(iterations), converged=bool(converged), method=method,
            block_size=self.block_size if method in BLOCKED else None, tol=0.0,
            sequence_length=self.length, network_evaluations=float(evaluations),
            stopped_by=stopped_by,
        )

    @torch.no_grad()
    def sequential(self, x: Tensor) -> ffsolve.SolveResult:
        """The model's own forward pass (``DenseNet.forward``, eval mode, no autograd): T steps,
        one layer each; one network evaluation. Nothing of the solvers is used."""
        return self._result(self.model(x), "sequential", self.length, True, 1.0)

    @torch.no_grad()
    def jacobi(self, x: Tensor, max_iters: int | None = None, on_call: OnCall = None,
               deadline: float | None = None):
        """``ffsolve.solve(method="jacobi")`` on the full map; every call computes all T layers.
        ``deadline`` (a ``time.perf_counter()`` value or an ``ffsolve.Deadline``) stops it after
        the call in progress."""
        stem = self.model.stem(x)
        f = self.jacobi_map(stem)
        if on_call is not None:
            f = _observed(f, on_call)
        res = ffsolve.solve(f, self.zeros(stem), method="jacobi", tol=0.0, max_iters=max_iters,
                            deadline=deadline)
        return self._result(self.readout(stem, res.x), "jacobi", res.iterations, res.converged,
                            res.network_evaluations,
                            "deadline" if res.stopped_by == "deadline" else None)

    @torch.no_grad()
    def gs_jacobi(self, x: Tensor, max_iters: int | None = None, on_call: OnCall = None,
                  deadline: float | None = None):
        """Groups of layers in order, Jacobi inside each (one batched call of a group = one step).

        ``max_iters`` caps the calls of all groups together; layers not reached stay zero.
        ``deadline`` (a ``time.perf_counter()`` value or an ``ffsolve.Deadline``) stops it after
        the call in progress.
        """
        if not self.groups:
            raise ValueError("gs_jacobi needs a LayerSystem built with block_size")
        stem = self.model.stem(x)
        sizes = self.spatial(stem)
        state = self.zeros(stem)
        budget = self.length if max_iters is None else max_iters
        calls, layers_computed, converged, cut = 0, 0, True, False
        block_input = stem
        features = stem
        for b, groups in enumerate(self.groups):
            layers = self.view(state, b, sizes)  # writes below land in ``state``
            prefix = block_input
            for packed in groups:
                if calls >= budget:
                    converged = False
                    break
                rows = slice(packed.first, packed.first + packed.count)
                f = _group_map(packed, prefix)
                if on_call is not None:
                    f = _observed(f, _placing(on_call, state, layers, rows))
                res = ffsolve.solve(f, torch.zeros_like(layers[rows]), method="jacobi", tol=0.0,
                                    max_iters=budget - calls, deadline=deadline)
                calls += res.iterations
                layers_computed += res.iterations * packed.count
                converged = converged and res.converged
                cut = cut or res.stopped_by == "deadline"
                layers[rows] = res.x
                prefix = self.concat(prefix, res.x)
            if not converged:
                break  # budget spent: later layers stay zero, as the trace's iterates show them
            features = prefix
            if b < len(self.transitions):
                block_input = self.transitions[b](prefix)
        # Finished: the last block's features are at hand. Stopped early: read the iterate out.
        logits = self.model.head(features) if converged else self.readout(stem, state)
        return self._result(logits, "gs_jacobi", calls, converged, layers_computed / self.length,
                            "deadline" if cut else None)

    @torch.no_grad()
    def jacobi_top5(self, x: Tensor, on_call: OnCall = None) -> ffsolve.SolveResult:
        """Jacobi over all T layers, stopped by :class:`Top5Patience` on its own iterates.

        The loop is :func:`ffsolve.solve`'s Jacobi (copy each call's output into the iterate, stop
        when a call changes nothing or after T calls), plus, after every call, the iterate's logits
        (:meth:`readout`) shown to the rule; it stops as soon as the rule says so. ``x`` of the
        result is the logits of the last iterate; ``converged`` is True only when the fixed point
        was reached (then the logits are ``jacobi``'s, bit for bit). Never more than T calls.
        """
        if self.top5_patience is None:
            raise ValueError("jacobi_top5 needs a LayerSystem built with top5_patience")
        stem = self.model.stem(x)
        f = self.jacobi_map(stem)
        state = self.zeros(stem)
        rule = Top5Patience(self.top5_patience)
        rule.observe(self.readout(stem, state))  # the all-zero guess is iterate 0
        calls, converged = 0, False
        while True:
            new = f(state)
            calls += 1
            fixed = torch.equal(new, state)
            state.copy_(new)
            if on_call is not None:
                on_call(state)
            logits = self.readout(stem, state)
            if fixed or calls >= self.length:  # the fixed point (exact after T calls at the latest)
                converged = True
                break
            if rule.observe(logits):
                break
        return self._result(logits, "jacobi_top5", calls, converged, calls)

    def run(self, method: str, x: Tensor, max_iters: int | None = None, on_call: OnCall = None,
            deadline: float | None = None):
        if method == "sequential":
            if max_iters is not None or on_call is not None:
                raise ValueError("the forward pass takes no step budget and no hook")
            return self.sequential(x)
        if method == "jacobi":
            return self.jacobi(x, max_iters, on_call, deadline)
        if method == "gs_jacobi":
            return self.gs_jacobi(x, max_iters, on_call, deadline)
        if method == "jacobi_top5":
            if max_iters is not None:
                raise ValueError("jacobi_top5 stops by its top-5 rule (at most T steps); it takes no budget")
            return self.jacobi_top5(x, on_call)
        raise ValueError(f"densenet methods are {list(METHODS)}; got {method!r}")

    @torch.no_grad()
    def traced(self, method: str, x: Tensor):
        """The method run once with the logits of every iterate recorded (not for timing).

        Returns the result and ``(iterations + 1, N, classes)`` logits, index 0 the all-zero
        guess. ``sequential``'s iterates are the forward pass's prefixes: after t layers, layers
        >= t are still zero.
        """
        stem = self.model.stem(x)
        frames = [self.readout(stem, self.zeros(stem)).cpu()]
        if method == "sequential":
            exact = self.forward_state(x)
            for t in range(1, self.length + 1):
                state = exact.clone()
                state[t:] = 0
                frames.append(self.readout(stem, state).cpu())
            result = self.sequential(x)
        else:
            result = self.run(method, x, on_call=lambda s: frames.append(self.readout(stem, s).cpu()))
        return result, torch.stack(frames).numpy()


def forward_candidate(model: DenseNet, batches: Sequence[Tensor], *, traced=None,
                      extra: dict | None = None):
    """The ``sequential`` run, the reference every other run is compared with: the model's own
    forward pass (``DenseNet.forward``: eval mode, ``torch.no_grad``, layer by layer) on every
    batch, as one timed program.

    ``traced`` replaces the default traced twin (the forward pass's prefixes, for the figure's
    curves: :meth:`LayerSystem.traced`); it must return ``(result, trace arrays)``.
    """
    from ffsolve.kit import Candidate, RunSpec

    if model.training:
        raise ValueError("the forward-pass reference needs the model in eval mode (call model.eval())")
    system = LayerSystem(model)
    if traced is None:
        def traced():
            return traced_batches(system, "sequential", batches)[0], {}

    def program(deadline=None):  # auto's pilot may stop it between batches
        return solve_batches(system, "sequential", batches, deadline=deadline)

    # The traced twin runs the same eager operations on the same shapes: it is the warm-up.
    return Candidate(RunSpec("sequential"), program, traced, tolerance=None,
                     extra={} if extra is None else extra, traced_warms_up=True)


def solve_batches(system: LayerSystem, method: str, batches: Sequence[Tensor],
                  max_iters: int | None = None, deadline: float | None = None) -> ffsolve.SolveResult:
    """``method`` on every input batch in turn (the timed program): logits of all images, and the
    largest step and network-evaluation counts of any batch (a batch is one solve).

    ``deadline`` (a ``time.perf_counter()`` value or an ``ffsolve.Deadline``; ``auto``'s pilot)
    stops the program after the step in progress, or between batches: the result then says
    ``stopped_by="deadline"`` and has not converged (the batches not reached are left out of its
    logits)."""
    results = []
    inside = hard_part(deadline)  # a batch's own progress is not the program's: no projection
    for x in batches:
        if deadline is None:
            results.append(system.run(method, x, max_iters) if max_iters else system.run(method, x))
            continue
        results.append(system.run(method, x, max_iters, deadline=inside) if method != "sequential"
                       else system.run(method, x))
        if results[-1].stopped_by == "deadline":
            break
        if len(results) < len(batches) and passed(deadline, len(results) / len(batches)):
            results[-1] = dataclasses.replace(results[-1], converged=False, stopped_by="deadline")
            break
    return _merge(results)


def traced_batches(system: LayerSystem, method: str, batches: Sequence[Tensor],
                   per_batch: list | None = None):
    """:meth:`LayerSystem.traced` on every batch: the merged result and ``(K + 1, N, classes)``
    logits of every iterate, a batch that finished early held at its last iterate. Each batch's
    own result is appended to ``per_batch`` when a list is given."""
    from ffsolve.experiments.densenet.stats import pad_to

    runs = [system.traced(method, x) for x in batches]
    if per_batch is not None:
        per_batch.extend(r for r, _ in runs)
    result = _merge([r for r, _ in runs])
    frames = [pad_to(f, result.iterations + 1) for _, f in runs]
    return result, np.concatenate(frames, axis=1)


def _merge(results: Sequence[ffsolve.SolveResult]) -> ffsolve.SolveResult:
    first = results[0]
    return dataclasses.replace(
        first,
        x=torch.cat([r.x for r in results]) if len(results) > 1 else first.x,
        iterations=max(r.iterations for r in results),
        converged=all(r.converged for r in results),
        network_evaluations=max(r.network_evaluations for r in results),
        stopped_by="deadline" if any(r.stopped_by == "deadline" for r in results) else first.stopped_by,
    )


# ------------------------------------------------------------------------------------------------
# The tolerance of the batched paths
# ------------------------------------------------------------------------------------------------


LOGIT_FACTOR = 10.0  # each float32 path assumed within 5e of the exact logits
UNIT_ROUNDOFF = EPS32 / 2  # u = 2^-24 for round-to-nearest float32


@torch.no_grad()
def logits_in(model: DenseNet, batches: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    """The forward pass's logits ``(N, classes)`` of ``model`` in ``dtype`` (eval mode; a copy
    unless it is already so), on the images cast to it: the same computation in another
    precision. Float64 runs on the CPU where the device has none (Apple's MPS)."""
    device = batches[0].device if batches else torch.device("cpu")
    if dtype == torch.float64 and device.type == "mps":
        device = torch.device("cpu")
    weight = next(model.parameters())
    same = weight.dtype == dtype and weight.device == device and not model.training
    net = model if same else copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    return torch.cat([net(x.to(device=device, dtype=dtype)) for x in batches])


def logit_tolerance(model: DenseNet, batches: Sequence[Tensor], factor: float = LOGIT_FACTOR) -> Tolerance:
    """The closeness of a batched path's logits to the forward pass's: the forward pass's own
    float32 error, measured against float64, times ``factor``.

    The forward pass in float32 and a float64 copy of the model on the same images give the
    float32 forward pass's own rounding error e = max |logits32 − logits64| over every image and
    class. The batched step computes the same logits in float32 from the same weights, summing in
    another order (other shapes, zero-padded weights, grouped convolutions, folded batch norm);
    assuming each path within 5 e of the exact logits (its own error may exceed the forward
    pass's: the batched paths' difference from the forward pass reached 1.2 e on the embedded
    default and 4.2 e on the test suite's tiny model, so 2 e per path was too few), the triangle
    inequality gives

        |logits_batched − logits_forward| <= 10 e.

    e is floored at one rounding of the largest logit (u · max|logit|). For a float64 model, the
    float32 error of the same network is scaled by the units' ratio (2^-29). Costs one forward
    pass in float64 and one in float32 over ``batches``.
    """
    dtype = next(model.parameters()).dtype
    unit = torch.finfo(dtype).eps / 2
    exact = logits_in(model, batches, torch.float64)
    low = logits_in(model, batches, torch.float32).to(device=exact.device, dtype=torch.float64)
    error = float((low - exact).abs().max()) if exact.numel() else 0.0
    floor = UNIT_ROUNDOFF * float(exact.abs().max()) if exact.numel() else 0.0
    atol = factor * max(error, floor) * (unit / UNIT_ROUNDOFF)
    why = (
        "compared: the logits. The batched step (all layers of a group in one masked batched 1x1 "
        "convolution and one grouped 3x3 convolution, batch norm folded) sums in another order "
        "than the per-layer convolutions of the forward pass, so float32 results differ in the "
        "last bits. Derived from the forward pass's own float32 error against a float64 copy of "
        f"the model on the same {exact.shape[0]} images: e = max|logits32 - logits64| = "
        f"{error:.3g} (floored at u·max|logit| = {floor:.3g}), times {factor:g}: each float32 path "
        f"assumed within {factor / 2:g}e of the exact logits, so they differ by at most "
        f"{factor:g}e (triangle inequality). TF32 is off on GPUs so the float32 arithmetic is the one measured"
        + ("" if dtype == torch.float32 else f"; e scaled by u/u32 = {unit / UNIT_ROUNDOFF:.3g}")
    )
    return Tolerance(atol=atol, rtol=0.0, why=why)


def float32_everywhere() -> None:
    """Plain float32 arithmetic on GPUs too (cuDNN and cuBLAS may use TF32, 10-bit mantissas,
    by default on Ampere and later; the tolerance above is derived for float32)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# The contract test's instance
# ------------------------------------------------------------------------------------------------

CONTRACT_MODEL = {"growth_rate": 4, "block_config": (3, 4, 2), "num_init_features": 6, "bn_size": 2,
                      "num_classes": 10, "in_channels": 1, "stem": "small", "stem_stride": 2}


def randomised_batch_norm(model: DenseNet, seed: int) -> DenseNet:
    """Non-trivial batch-norm statistics and affine parameters (so folding BN is really tested)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.rand(n, generator=generator) - 0.5)
    return model.eval()


# ------------------------------------------------------------------------ the workflow's runs


@dataclass
class Problem:
    """A dataset's model and inputs: what every method solves."""

    model: DenseNet
    batches: list
    labels: np.ndarray | None
    description: str
    speed_only: bool = False


def trace_arrays(frames: np.ndarray, reference: np.ndarray) -> tuple[dict, dict]:
    """The trace.npz arrays of one run and its top-k stability fields, from the logits of every
    iterate ``(K + 1, N, C)`` and the forward pass's ``(N, C)``."""
    error, change = stats.logit_norms(frames, reference)
    k5 = min(5, reference.shape[-1])
    mismatch1 = stats.topk_mismatch(frames, reference, 1)
    mismatch5 = stats.topk_mismatch(frames, reference, k5)
    stable = {
        "stable_top1_iteration": stats.as_optional(stats.batch_stable_iteration(mismatch1)),
        "stable_top5_iteration": stats.as_optional(stats.batch_stable_iteration(mismatch5)),
    }
    arrays = {"logit_error": error, "logit_change": change, "top1_mismatch": mismatch1,
              "top5_mismatch": mismatch5}
    return arrays, stable


TOP5_STOP_RULE = (
    "stops once every image's descending top-{k} list of classes (of its own iterate's logits) has "
    "been the same for {patience} consecutive parallel steps, at the fixed point, or after T steps, "
    "whichever comes first; evaluated inside the timed loop, never looking at the forward pass"
)


def candidates(problem: Problem, runs: Sequence[RunSpec], device, *, top5_patience: int
               ) -> tuple[list[Candidate], np.ndarray]:
    """Every run of ``runs`` but ``auto`` (the harness adds it), and the forward pass's logits
    (the reference) as a host array."""
    model = problem.model.to(device).eval()
    batches = [b.to(device) for b in problem.batches]
    tolerance = logit_tolerance(model, batches)
    reference = solve_batches(LayerSystem(model), "sequential", batches).x.cpu().numpy()
    images = int(reference.shape[0])
    shared = {"label": problem.description, "speed_only": problem.speed_only, "images": images,
              "batches": len(batches), "input_shapes": sorted({tuple(b.shape) for b in batches}),
              "tf32": False}
    if problem.labels is not None:
        shared["forward_top1_accuracy"] = float(np.mean(reference.argmax(-1) == problem.labels))
        if reference.shape[-1] >= 5:
            top5 = stats.topk(reference, 5)
            shared["forward_top5_accuracy"] = float(np.mean(np.any(top5 == problem.labels[:, None], -1)))
    out = []
    for spec in progress(runs, "traces"):
        if spec.method == AUTO:  # added below, over the other runs
            continue
        system = LayerSystem(model, spec.block_size, top5_patience)
        extra = {**shared}

        def traced(system=system, method=spec.method, extra=extra):
            per_batch = []
            result, frames = traced_batches(system, method, batches, per_batch)
            arrays, stable = trace_arrays(frames, reference)
            extra.update(stable)  # trace analysis (untimed), written with the record
            arrays["batch_iterations"] = np.asarray([r.iterations for r in per_batch])
            return result, arrays

        if spec.method == "sequential":
            out.append(forward_candidate(model, batches, traced=traced, extra=extra))
            continue
        top5 = spec.method == "jacobi_top5"
        if top5:  # judged by its top-5 lists (scored by the measure job), not by a logit tolerance
            k = min(5, reference.shape[-1])
            extra.update(quantity="time_to_top5", top5_patience=top5_patience,
                         stop_rule=TOP5_STOP_RULE.format(k=k, patience=top5_patience))
        if top5:
            def program(system=system, m=spec.method):
                return solve_batches(system, m, batches)
        else:  # auto's pilot may stop it after the step in progress
            def program(system=system, m=spec.method, deadline=None):
                return solve_batches(system, m, batches, deadline=deadline)
        out.append(Candidate(spec, program, traced, tolerance=None if top5 else tolerance, extra=extra,
                             traced_warms_up=True))
    return out, reference



def contract_candidates():
    """A tiny DenseNet (T = 9 dense layers in blocks of 3, 4, 2) on two input batches, for the
    contract test. Compared output: the logits.

    * ``sequential``: the forward pass, layer by layer (the reference, as in the workflow);
    * ``jacobi``: the workflow's jacobi, i.e. ``ffsolve.solve(method="jacobi")`` on the full map;
    * ``gs_jacobi_b2``: the workflow's fast path (groups of 2 layers inside each dense block);
    * every other method of ``ffsolve.available_methods()`` through ``ffsolve.solve`` on the full
      map, its logits read out: ``gs_jacobi_b4`` and ``jacobi_gs_b4`` (blocks of 4 positions that
      straddle dense blocks and do not divide T), and ``sequential_k9`` (ffsolve's sequential,
      one position per call, at most T = 9 calls; named apart from the forward pass).

    Every parallel path carries :func:`logit_tolerance`; each has a traced twin.
    """
    from ffsolve.kit import Candidate, RunSpec, torch_generator, uses_blocks

    torch.manual_seed(0)
    model = randomised_batch_norm(DenseNet(**CONTRACT_MODEL), seed=0)
    generator = torch_generator(7, "densenet", "contract", "inputs")
    batches = [torch.randn(3, 1, 28, 28, generator=generator) for _ in range(2)]
    tolerance = logit_tolerance(model, batches)
    out = []
    for spec in (RunSpec("sequential"), RunSpec("jacobi"), RunSpec("gs_jacobi", 2)):
        system = LayerSystem(model, spec.block_size)
        out.append(Candidate(
            spec,
            lambda system=system, m=spec.method: solve_batches(system, m, batches),
            lambda system=system, m=spec.method: (traced_batches(system, m, batches)[0], {}),
            tolerance=None if spec.method == "sequential" else tolerance,
        ))

    whole = LayerSystem(model)
    for method in ffsolve.available_methods():
        if method == "jacobi":
            continue  # the workflow's jacobi above is exactly this
        spec = (RunSpec(method, 4) if uses_blocks(method)
                else RunSpec(method, budget=whole.length))

        def program(method=method, spec=spec, trace=False):
            results = []
            for x in batches:
                with torch.no_grad():
                    stem = model.stem(x)
                    res = ffsolve.solve(whole.jacobi_map(stem), whole.zeros(stem), method=method,
                                        block_size=spec.block_size, max_iters=spec.budget,
                                        trace=trace)
                    results.append(dataclasses.replace(res, x=whole.readout(stem, res.x)))
            return _merge(results)

        out.append(Candidate(spec, program, lambda program=program: (program(trace=True), {}),
                             tolerance=tolerance))
    return out
