"""JAX: no stale programs. The cache of compiled programs that :func:`ffsolve.solve_recurrence`
and the JAX gradients of :func:`ffsolve.solve` and :func:`ffsolve.solve_recurrence` share
(:mod:`ffsolve.recurrence.solve`, :mod:`ffsolve.recurrence.grad`, :mod:`ffsolve.solvers.grad`),
below all three.

A step that reads its weights from a closure must never be answered by a program compiled for
old weights. So the step is traced on every call (about a millisecond) into a jaxpr whose
constants (the closure's current arrays) become arguments of the compiled program, and
programs are cached by the jaxpr's text: a new lambda with the same body reuses the program,
a changed weight is a new argument, and the cache keeps no closure (nor its arrays) alive.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

_PROGRAMS: OrderedDict = OrderedDict()
_PROGRAMS_KEPT = 128  # a Jacobi solve in JAX holds up to ⌈log₂T⌉ + 1 window programs (T = 10,000: 15)


@dataclass(frozen=True)
class _Traced:
    key: str
    consts: tuple
    fn: Callable  # fn(consts, *args) -> the traced function's output


def _trace(fn: Callable, *examples, allow_tracers: bool = False) -> _Traced:
    import jax

    closed = jax.make_jaxpr(fn)(*examples)
    if not allow_tracers and any(isinstance(c, jax.core.Tracer) for c in closed.consts):
        raise TypeError(
            "internal: a step closing over traced values reached a compiled program (the "
            "differentiable path should have taken it); please report it.")
    jaxpr = closed.jaxpr
    out_single = len(jaxpr.outvars) == 1

    def pure(consts, *args):
        out = jax.core.eval_jaxpr(jaxpr, list(consts), *args)
        return out[0] if out_single else tuple(out)

    return _Traced(str(jaxpr), tuple(closed.consts), pure)


def _program(key: tuple, build: Callable) -> Callable:
    program = _PROGRAMS.get(key)
    if program is None:
        program = build()
        _PROGRAMS[key] = program
        while len(_PROGRAMS) > _PROGRAMS_KEPT:
            _PROGRAMS.popitem(last=False)
    else:
        _PROGRAMS.move_to_end(key)
    return program
