"""Every method on a random nonlinear triangular map: the smallest complete experiment, and the
template the others follow (system.py, experiment.py)."""

# The methods that take a block size, each run once per configured block size (read by the
# measure job and by workflow/rules/common.smk; this module imports nothing heavy).
BLOCKED = ("gs_jacobi", "jacobi_gs", "sliding_jacobi")
