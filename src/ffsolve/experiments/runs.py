"""Names of solver runs: ``sequential``, ``jacobi``, ``gs_jacobi_b16``, ``jacobi_gs_b28``.

A run name is the results folder of one method at one block size (DESIGN.md §6:
``results/<experiment>/<dataset>/<run>/metrics.json``).
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

from ffsolve.solvers.core import _USES_BLOCKS, available_methods

_BLOCKED = re.compile(r"^(?P<method>[a-z_]+?)_b(?P<block>[1-9][0-9]*)$")


def run_name(method: str, block_size: Optional[int] = None) -> str:
    return method if block_size is None else f"{method}_b{block_size}"


def parse_run_name(name: str) -> tuple[str, Optional[int]]:
    """``"gs_jacobi_b16"`` -> ``("gs_jacobi", 16)``; ``"jacobi"`` -> ``("jacobi", None)``."""
    match = _BLOCKED.match(name)
    if match and match["method"] in _USES_BLOCKS:
        return match["method"], int(match["block"])
    if name in available_methods() and name not in _USES_BLOCKS:
        return name, None
    raise ValueError(
        f"unknown run {name!r}: expected one of {sorted(set(available_methods()) - _USES_BLOCKS)} "
        f"or <method>_b<block size> for {sorted(_USES_BLOCKS)}"
    )


def run_names(methods: Iterable[str], block_sizes: Iterable[int]) -> list[str]:
    """Every run for ``methods``: blocked methods once per block size, the others once."""
    block_sizes = list(block_sizes)
    names = []
    for method in methods:
        if method in _USES_BLOCKS:
            names.extend(run_name(method, b) for b in block_sizes)
        else:
            names.append(run_name(method))
    return names
