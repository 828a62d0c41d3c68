"""RNN backpropagation through time (paper §2.1): the adjoint recursion of a vanilla RNN solved by
BPTT, Jacobi iteration and parallel scans (model.py, system.py, experiment.py, plots.py).

The run layout lives in layout.py, free of torch, so that workflow/rules/common.smk expands the
same runs as :func:`ffsolve.experiments.rnn_backprop.experiment.runs` without importing torch.
"""

from ffsolve.experiments.rnn_backprop.layout import BLOCKED, BUDGETED, configured_runs

__all__ = ["BLOCKED", "BUDGETED", "configured_runs"]
