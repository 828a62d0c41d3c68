"""MADE sampling (paper §2.3): a masked autoregressive network whose sampling is a triangular
system. ``model.py`` (the network, checkpoints), ``density.py`` (logit space, bits per dimension),
``system.py`` (the sampling map and its candidates), ``experiment.py`` (train and measure jobs),
``plots.py`` (the figures)."""

# The methods that take a block size, each run once per configured block size: the one list the
# measure job and workflow/rules/common.smk both read (this module imports no torch).
BLOCKED = ("gs_jacobi", "jacobi_gs", "sliding_jacobi")
