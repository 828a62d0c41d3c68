"""RNN backpropagation through time (paper §2.1): the adjoint recursion of a vanilla RNN solved by
BPTT, Jacobi iteration and parallel scans (model.py, system.py, experiment.py, plots.py).

The run layout lives here, free of torch, so that workflow/rules/rnn_backprop.smk expands the
same runs as :func:`ffsolve.experiments.rnn_backprop.experiment.runs` without importing torch.
"""

from ffsolve.kit.runs import run_names

BLOCKED = ("gs_jacobi", "jacobi_gs", "sliding_jacobi")  # one run per block size
BUDGETED = ("jacobi",)  # one run per budget (jacobi_k<budget>), and one to the end


def configured_runs(methods, block_sizes, budgets) -> list[str]:
    """The run names of a config section (the folders under results/rnn_backprop/<dataset>/)."""
    return run_names(methods, block_sizes, budgets, blocked=BLOCKED, budgeted=BUDGETED)
