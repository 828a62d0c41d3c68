"""RNN backpropagation through time (paper §2.1): the adjoint recursion of a vanilla RNN solved by
BPTT, Jacobi iteration and parallel scans (model.py, system.py, experiment.py, plots.py)."""
