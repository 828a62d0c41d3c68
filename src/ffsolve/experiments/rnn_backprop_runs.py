"""Run names of the RNN backprop experiment (pure: common.smk imports it without torch).

One run = one backward method, trained and timed in ``results/rnn_backprop/<dataset>/<run>/``:

- ``sequential``: hand-written BPTT;
- ``jacobi_k<k>``: Jacobi with a fixed budget of k iterations (the paper's Jacobi_k);
- ``jacobi_tol``: Jacobi until max |change| <= ``rnn_backprop.jacobi_tol`` × max |dloss/dh_t|
  (at most T iterations);
- ``scan_hillis_steele``, ``scan_odd_even``: the exact parallel scans.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

SCAN_ALGORITHMS = ("hillis_steele", "odd_even")
_BUDGET = re.compile(r"^jacobi_k(?P<k>[1-9][0-9]*)$")


def run_names(cfg: Mapping) -> list[str]:
    """Every run the ``rnn_backprop`` config section asks for, sequential first."""
    names = []
    for method in cfg["methods"]:
        if method == "sequential":
            names.append("sequential")
        elif method == "jacobi":
            names.extend(f"jacobi_k{k}" for k in cfg["jacobi_budgets"])
            if cfg.get("jacobi_tol") is not None:
                names.append("jacobi_tol")
        elif method == "scan":
            names.extend(f"scan_{algorithm}" for algorithm in cfg["scan_algorithms"])
        else:
            raise ValueError(
                f"rnn_backprop.methods: unknown method {method!r}; use sequential, jacobi or scan"
            )
    return names


def parse_run(name: str, cfg: Mapping) -> dict:
    """``"jacobi_k10"`` -> ``{"method": "jacobi", "max_iters": 10, "tol": 0.0, ...}``.

    The tolerance of ``jacobi_tol`` comes from ``cfg["jacobi_tol"]``; unknown names are refused
    with the list of valid forms.
    """
    match = _BUDGET.match(name)
    spec: dict = {"method": None, "max_iters": None, "tol": 0.0, "scan_algorithm": "hillis_steele"}
    if name == "sequential":
        spec["method"] = "sequential"
    elif match:
        spec.update(method="jacobi", max_iters=int(match["k"]))
    elif name == "jacobi_tol":
        tol: Optional[float] = cfg.get("jacobi_tol")
        if tol is None:
            raise ValueError("run jacobi_tol needs rnn_backprop.jacobi_tol to be set (a number >= 0)")
        spec.update(method="jacobi", tol=float(tol))
    elif name.startswith("scan_") and name[len("scan_"):] in SCAN_ALGORITHMS:
        spec.update(method="scan", scan_algorithm=name[len("scan_"):])
    else:
        raise ValueError(
            f"unknown rnn_backprop run {name!r}: expected sequential, jacobi_k<budget>, "
            f"jacobi_tol or one of {[f'scan_{a}' for a in SCAN_ALGORITHMS]}"
        )
    return spec
