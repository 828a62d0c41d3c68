"""Evaluating an RNN over a long sequence as a recurrence solve, and the runs that time it.

The states s_1..s_T of s_t = step(s_{t-1}, u_t), s_0 = 0, are the solution of a lower-triangular
(here: Markov) system; :func:`ffsolve.solve_recurrence` solves it with the loop (``sequential``),
``jacobi``, ``newton`` (DEER: the trajectory linearised, its affine maps combined by a parallel
prefix scan), ``quasi_newton`` (the Jacobian's diagonal only, an elementwise scan) and
``damped_newton`` (ELK-style damping toward the current iterate). The cells are the library's
(``ffsolve.recurrence.cells``) on this experiment's weights, in PyTorch or JAX.

:func:`candidates` turns the configured runs of one case into harness candidates on the same
weights and inputs: the timed program is the plain solve; its traced twin is the same solve with
``trace=True``, from whose iterates it keeps, per parallel step, the largest absolute difference
from the sequential loop's states (the error the figures draw) and from the run's own result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import ffsolve
from ffsolve.experiments.rnn_forward.cases import SEQUENTIAL, WEIGHT_NAMES, Case
from ffsolve.kit import Candidate, RunSpec, Tolerance, parse_run_name, to_numpy_leaves

NEWTON_TYPE = ("newton", "quasi_newton", "damped_newton")
NATIVE = "sequential_native"
"""The framework's own sequential kernel, the loop a user without ffsolve already has:
``torch.nn.GRU`` (PyTorch's fused kernel) on the cell's weights (another cell: the plain Python
loop over its step), or in JAX the step under one jitted ``lax.scan``. A sequential baseline beside the library's loop: every ratio against the
stronger of the two names it."""
NATIVE_FACTOR = 4.0
"""The native kernel's tolerance is this multiple of the larger float32 error against float64
(:func:`native_tolerance`)."""


def device_for(framework: str, choice: str = "auto"):
    """The torch or JAX device a case runs on (``auto|cpu|cuda``)."""
    from ffsolve.kit import jax_device, torch_device

    return jax_device(choice) if framework == "jax" else torch_device(choice)


def to_framework(array: np.ndarray, framework: str, device=None):
    """A NumPy array as a torch tensor or JAX array on ``device`` (same dtype and bits)."""
    if framework == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(array)).to(device or "cpu")
    import jax

    return jax.device_put(np.asarray(array), device)


def build_cell(cell: str, weights: Mapping[str, np.ndarray], framework: str, device=None):
    """``ffsolve.recurrence.cells.gru`` or ``.softplus_rnn`` on ``weights`` in ``framework``."""
    from ffsolve.recurrence import cells

    arrays = [to_framework(weights[name], framework, device) for name in WEIGHT_NAMES[cell]]
    return cells.gru(*arrays) if cell == "gru" else cells.softplus_rnn(*arrays)


def solve_states(cell, s0, inputs, spec: RunSpec, *, damping: float, trace: bool = False,
                 deadline: float | None = None) -> ffsolve.SolveResult:
    """All T states ``(T, batch, H)`` of the recurrence by ``spec``'s method, stopping at its tol
    (or after the step in progress once ``deadline``, a ``time.perf_counter()`` value or an
    ``ffsolve.Deadline``, passed)."""
    newton = spec.method in NEWTON_TYPE
    return ffsolve.solve_recurrence(
        cell.step, s0, inputs, method=spec.method, tol=spec.stopping_tol(),
        jacobian=cell if newton else None,  # the cells' analytic Jacobians
        damping=damping if spec.method == "damped_newton" else None, trace=trace,
        deadline=deadline,
    )


def native_loop(case: Case, weights: Mapping[str, np.ndarray], device=None):
    """:data:`NATIVE` for ``case``: a function ``(s0, u) -> states (T, batch, H)``. PyTorch has a
    fused kernel for the GRU only; for another cell it is the plain Python loop over the step (a
    user's loop, the same work as ``sequential``)."""
    if case.framework == "torch" and case.cell != "gru":
        # PyTorch fuses the GRU only: for another cell a user's loop is the plain one.
        import torch

        cell = build_cell(case.cell, weights, "torch", device)

        def plain(s0, u):
            with torch.no_grad():
                states, s = [], s0
                for u_t in u:
                    s = cell.step(s, u_t)
                    states.append(s)
                return torch.stack(states)

        return plain
    if case.framework == "torch":
        import torch

        w_ih, w_hh, b_ih, b_hh = (torch.from_numpy(np.ascontiguousarray(weights[name]))
                                  for name in WEIGHT_NAMES["gru"])
        gru = torch.nn.GRU(w_ih.shape[1], w_hh.shape[1])
        with torch.no_grad():
            for name, value in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"),
                                   (w_ih, w_hh, b_ih, b_hh)):
                getattr(gru, name).copy_(value)
        gru = gru.to(device or "cpu").eval().requires_grad_(False)

        def run(s0, u):
            with torch.no_grad():
                return gru(u, s0[None])[0]

        return run
    import jax

    cell = build_cell(case.cell, weights, "jax", device)

    @jax.jit
    def run(s0, u):
        def body(s, u_t):
            s = cell.step(s, u_t)
            return s, s

        return jax.lax.scan(body, s0, u)[1]

    return run


def native_tolerance(case: Case, weights: Mapping[str, np.ndarray], inputs: np.ndarray,
                     native: np.ndarray, loop: np.ndarray, factor: float = NATIVE_FACTOR) -> Tolerance:
    """How close :data:`NATIVE` must come to the loop: the larger of the two float32 paths' errors
    against the loop in float64 (the library's cell on float64 weights and inputs, in PyTorch),
    e, times ``factor``: each within 2 e of the exact states, so they differ by at most 4 e
    (triangle inequality). e is floored at one rounding of a state (|s| <= 1 for a GRU)."""
    import torch

    from ffsolve.recurrence import cells

    arrays = [torch.from_numpy(np.asarray(weights[name], np.float64)) for name in WEIGHT_NAMES[case.cell]]
    cell64 = cells.gru(*arrays) if case.cell == "gru" else cells.softplus_rnn(*arrays)
    u64 = torch.from_numpy(np.asarray(inputs, np.float64))
    exact = ffsolve.solve_recurrence(cell64.step, torch.zeros(u64.shape[1], case.hidden, dtype=torch.float64),
                                     u64, method=SEQUENTIAL).x.numpy()
    error = max(float(np.max(np.abs(np.asarray(x, np.float64) - exact), initial=0.0)) for x in (native, loop))
    floor = float(np.finfo(np.float32).eps) / 2
    kernel = ("one jitted lax.scan" if case.framework == "jax" else "torch.nn.GRU, a fused kernel"
              if case.cell == "gru" else "the plain loop over the step")
    why = (f"{NATIVE} ({kernel}) "
           "computes the same recurrence in float32 but may sum each gate's products in another "
           "order than the library's loop, so bit-for-bit equality cannot be promised. Derived from "
           f"the float32 states' own error against the loop in float64 ({u64.shape[1]} sequences of "
           f"{u64.shape[0]} steps): e = max over both paths of max|x32 - x64| = {error:.3g} (floored "
           f"at one rounding, {floor:.3g}), times {factor:g}: each within 2e of the exact states, so "
           "they differ by at most 4e (triangle inequality)")
    return Tolerance(atol=factor * max(error, floor), rtol=0.0, why=why)


def _native_candidate(case: Case, weights, inputs, s0, u, reference, device, extra) -> Candidate:
    run = native_loop(case, weights, device)

    def program() -> ffsolve.SolveResult:
        x = run(s0, u)
        return ffsolve.SolveResult(x=x, iterations=case.length, converged=True, method=NATIVE,
                                   block_size=None, tol=0.0, sequence_length=case.length,
                                   network_evaluations=1.0, stopped_by="sequential")

    def traced():
        result = program()
        x = to_numpy_leaves(result.x)[0]
        start = float(np.max(np.abs(reference()), initial=0.0))  # the iterate starts at zeros
        return result, {
            "error_max": np.asarray([start, _max_abs(x, reference())]),
            "error_to_final": np.asarray([float(np.max(np.abs(x), initial=0.0)), 0.0]),
            "change_max": np.asarray([float(np.max(np.abs(x), initial=0.0))]),
            "sequence_length": np.asarray(case.length),
            "hidden_size": np.asarray(case.hidden),
        }

    native = to_numpy_leaves(run(s0, u))[0]  # also compiles JAX's scan before any timing
    # The traced twin is one call of the timed program: it is the warm-up.
    return Candidate(RunSpec(NATIVE), program, traced,
                     native_tolerance(case, weights, inputs, native, reference()), extra=dict(extra or {}),
                     traced_warms_up=True)


def tolerance(spec: RunSpec) -> Tolerance | None:
    """None for every run: at tol 0 each method, Newton-type ones included, must return the loop's
    states bit for bit (the library polishes a Newton-type result with Jacobi steps until nothing
    changes, and the cells give each position the same bits whatever the number of positions);
    runs stopped at tol > 0 are held to nothing, their difference from the loop (``max_abs_diff``)
    is what the frontier measures."""
    return None


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))


def trace_arrays(result, reference: np.ndarray) -> dict[str, np.ndarray]:
    """Per parallel step k = 0..iterations: the largest |s_k - s_final| (``error_to_final``), the
    largest |s_k - s_loop| (``error_max``; NaN where the library kept no iterates because they
    would not fit and the result differs from the loop's) and the largest change from step
    k - 1 (``change_max``)."""
    trace = result.trace
    iterates = np.asarray(trace.iterates)
    final = to_numpy_leaves(result.x)[0]
    if iterates.ndim > 1:
        error = np.asarray([_max_abs(it, reference) for it in iterates])
    elif np.array_equal(final, reference):
        error = np.asarray(trace.max_error, dtype=np.float64)
    else:
        error = np.full(len(trace.max_error), np.nan)
    return {
        "error_max": error,
        "error_to_final": np.asarray(trace.max_error, dtype=np.float64),
        "change_max": np.asarray(trace.max_change, dtype=np.float64),
    }


def candidates(case: Case, weights: Mapping[str, np.ndarray], inputs: np.ndarray, runs: Sequence[str | RunSpec],
               *, damping: float = 100.0, device=None, extra: dict | None = None,
               auto=None, key: Mapping[str, Any] | None = None) -> list[Candidate]:
    """One harness candidate per run of ``case``, all on the same cell and inputs (s_0 = 0);
    ``auto`` runs (:mod:`ffsolve.kit.auto`, with ``auto`` its settings and ``key`` the problem
    its decision is kept under) predict the loop (PyTorch: its first 2% of steps, scaled; JAX:
    the loop first, in full) and try the other runs under deadlines."""
    cell = build_cell(case.cell, weights, case.framework, device)
    u = to_framework(inputs, case.framework, device)
    s0 = to_framework(np.zeros((inputs.shape[1], case.hidden), np.float32), case.framework, device)
    shared: dict[str, Any] = {}

    def reference() -> np.ndarray:
        if "reference" not in shared:
            shared["reference"] = to_numpy_leaves(solve_states(cell, s0, u, RunSpec(SEQUENTIAL), damping=damping).x)[0]
        return shared["reference"]

    from ffsolve.kit import add_auto, loop_pilot, pilot_steps, split_auto

    specs, autos = split_auto([run if isinstance(run, RunSpec) else parse_run_name(run) for run in runs])
    out = []
    for spec in specs:
        if spec.method == NATIVE:
            out.append(_native_candidate(case, weights, inputs, s0, u, reference, device, extra))
            continue

        def program(spec=spec, deadline=None) -> ffsolve.SolveResult:
            return solve_states(cell, s0, u, spec, damping=damping, deadline=deadline)

        def traced(spec=spec):
            result = solve_states(cell, s0, u, spec, damping=damping, trace=True)
            return result, {
                **trace_arrays(result, reference()),
                "sequence_length": np.asarray(case.length),
                "hidden_size": np.asarray(case.hidden),
            }

        run_extra = {**dict(extra or {}), **({"damping": damping} if spec.method == "damped_newton" else {})}
        # PyTorch's traced solve runs the same eager operations on the same shapes, so it is the
        # warm-up; JAX's traced solve is another program than the compiled one it would warm up.
        out.append(Candidate(spec, program, traced, tolerance(spec), extra=run_extra,
                             traced_warms_up=case.framework == "torch"))
    # auto (ffsolve.kit.auto): the fastest run that gives the loop's bits (at tol 0). PyTorch's
    # loop costs the same per step, so its first 2% of the T steps, scaled by T / k, predict it,
    # and the parallel methods run first under deadlines, the loop last. JAX's loop is one
    # compiled lax.scan whose fixed cost per call dominates at these sizes: 50 steps scaled by 20
    # predicted 0.24 s for a loop that takes 9 ms, so JAX runs the whole loop first (milliseconds).
    length = case.length
    pilot = None if case.framework == "jax" else loop_pilot(
        lambda k: ffsolve.solve_recurrence(cell.step, s0, u[:k], method=SEQUENTIAL), pilot_steps(length), length)
    return add_auto(out, autos, settings=auto, baseline_pilot=pilot, extra=dict(extra or {}), key=key)


def triangular_map(cell, s0, inputs, framework: str):
    """The recurrence as a triangular map along axis 0 for :func:`ffsolve.solve`:
    f(x)_t = step(x_{t-1}, u_t) with x_0 = s_0; its fixed point is the loop's states.

    It has a window evaluator (:func:`ffsolve.windowed`): time steps [start, stop) are the step on
    those rows alone, so ``suffix_jacobi`` and ``sliding_jacobi`` evaluate the step only from the
    exact prefix on. Every call computes its products in groups of the batch's rows
    (:func:`ffsolve.recurrence.cells.row_group`), so a time step's bits do not depend on how many
    steps one call evaluates: the window is the full map's rows, bit for bit."""
    from ffsolve.recurrence import cells as cell_ops

    batch = inputs.shape[1]
    if framework == "torch":
        import torch

        def previous(x, start, stop):
            return x[start - 1:stop - 1] if start > 0 else torch.cat([s0[None], x[:stop - 1]], dim=0)
    else:
        import jax.numpy as jnp

        def previous(x, start, stop):
            return x[start - 1:stop - 1] if start > 0 else jnp.concatenate([s0[None], x[:stop - 1]], axis=0)

    def window(x, start, stop):
        with cell_ops.row_group(batch):
            return cell.step(previous(x, start, stop), inputs[start:stop])

    return ffsolve.windowed(lambda x: window(x, 0, x.shape[0]), window)


def triangular_candidates(case: Case, weights: Mapping[str, np.ndarray], inputs: np.ndarray,
                          block_size: int) -> list[Candidate]:
    """Every method of ``ffsolve.available_methods()`` on :func:`triangular_map` (blocked methods
    at ``block_size``). ``jacobi``, ``gs_jacobi`` and ``jacobi_gs`` evaluate the step at all T
    positions per call; through the map's bitwise window ``sequential`` evaluates one position per
    call (the loop) and ``suffix_jacobi``/``sliding_jacobi`` only from the exact prefix on."""
    from ffsolve.kit import uses_blocks

    cell = build_cell(case.cell, weights, case.framework)
    u = to_framework(inputs, case.framework)
    s0 = to_framework(np.zeros((inputs.shape[1], case.hidden), np.float32), case.framework)
    f = triangular_map(cell, s0, u, case.framework)
    x0 = to_framework(np.zeros((case.length, inputs.shape[1], case.hidden), np.float32), case.framework)
    out = []
    for method in ffsolve.available_methods():
        spec = RunSpec(method, block_size if uses_blocks(method) else None)

        def program(spec=spec, trace=False):
            return ffsolve.solve(f, x0, method=spec.method, block_size=spec.block_size, trace=trace)

        def traced(spec=spec, program=program):
            result = program(trace=True)
            return result, {"change": np.asarray(result.trace.change), "error": np.asarray(result.trace.error)}

        out.append(Candidate(spec, program, traced))
    return out


# Tells tests/experiments/test_contract.py to check every method of
# ffsolve.available_recurrence_methods() too.
RECURRENCE = True


def contract_candidates() -> dict[str, list[Candidate]]:
    """Tiny instances for tests/experiments/test_contract.py, each measured on its own against its own loop:
    a random GRU (T 32, H 4, batch 3) with every recurrence method through :func:`candidates`
    (what the workflow times) in PyTorch and in JAX on the same weights and inputs, the same GRU
    written as a triangular map with every method of ``ffsolve.solve`` (blocked ones at a block
    size that does not divide T), the framework's own kernel (:data:`NATIVE`) beside the GRU's
    runs, and a random softplus RNN (T 24, H 4, batch 2) with every
    recurrence method in PyTorch. (JAX compiles every method once; a second JAX cell would double
    that time for no new code path.)"""
    from ffsolve.experiments.rnn_forward.cases import parse_case, random_case_arrays

    groups: dict[str, list[Candidate]] = {}
    methods = list(ffsolve.available_recurrence_methods())
    for name, batch in (("gru_T32_H4", 3), ("gru_T32_H4_jax", 3), ("softplus_T24_H4", 2)):
        case = parse_case(name)
        weights, inputs = random_case_arrays(case, batch=batch, input_size=3, seed=7)
        groups[name] = candidates(case, weights, inputs, methods + [NATIVE])
        if name == "gru_T32_H4":
            groups[f"{name}/triangular"] = triangular_candidates(case, weights, inputs, block_size=7)
    return groups
