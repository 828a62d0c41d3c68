"""Every method on a random nonlinear triangular map: the smallest complete experiment, and the
template the others follow (system.py, experiment.py)."""
