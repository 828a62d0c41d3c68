"""Forward-mode state Jacobians of a step on rows, for the Newton-type methods of
:mod:`ffsolve.recurrence.solve` and the ``"scan"`` backward of :mod:`ffsolve.recurrence.grad`
(below both)."""

from __future__ import annotations

from collections.abc import Callable


def _row_jacobian(framework: str, row_step: Callable, which: str) -> Callable:
    """The per-row state Jacobian of ``row_step`` ((N, H) × (N, D) -> (N, H), rows independent)
    by forward mode: H Jacobian-vector products, each with the tangent e_j on every row at once,
    give column j of every row's Jacobian. Returns ``(N, H, H)`` or its diagonal ``(N, H)``."""
    if framework == "torch":
        import torch

        def jvp_columns(s, u):
            h = s.shape[-1]
            basis = torch.eye(h, dtype=s.dtype, device=s.device)[:, None, :].expand(h, *s.shape)

            def column(t):
                return torch.func.jvp(lambda s_: row_step(s_, u), (s,), (t,))[1]

            try:
                cols = torch.func.vmap(column)(basis)
            except RuntimeError as err:
                raise ValueError(
                    "the Newton-type methods differentiate step by forward-mode autodiff under "
                    f"torch.func.vmap, which failed for this step ({err}). Give the Jacobian: "
                    "jacobian=a Cell, {'full': fn, 'diagonal': fn}, or a callable (s, u) -> "
                    "(N, H, H); or use method='jacobi'.") from err
            return cols.movedim(0, -1)  # (N, H_out, H_in)
    else:
        import jax
        import jax.numpy as jnp

        def jvp_columns(s, u):
            h = s.shape[-1]
            basis = jnp.broadcast_to(jnp.eye(h, dtype=s.dtype)[:, None, :], (h,) + s.shape)
            cols = jax.vmap(lambda t: jax.jvp(lambda s_: row_step(s_, u), (s,), (t,))[1])(basis)
            return jnp.moveaxis(cols, 0, -1)

    if which == "full":
        return jvp_columns

    def diagonal(s, u):
        return jvp_columns(s, u).diagonal(0, -2, -1)

    return diagonal
