"""MADE sampling (paper §2.3): a masked autoregressive network whose sampling is a triangular
system. ``model.py`` (the network, checkpoints), ``density.py`` (logit space, bits per dimension),
``system.py`` (the sampling map and its candidates), ``experiment.py`` (train and measure jobs),
``plots.py`` (the figures)."""
