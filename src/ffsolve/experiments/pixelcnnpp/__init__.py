"""PixelCNN++ sampling (paper §2.4–2.8) in JAX/Flax. ``model.py`` (the network with its row-band
activation cache, checkpoints), ``pixel_cache.py`` (the per-pixel activation cache on the same
parameters), ``mixture.py`` (the discretized logistic mixture: likelihood and noise-driven
sampling), ``system.py`` (the sampling map, the cached samplers, the candidates),
``experiment.py`` (train and measure jobs), ``plots.py`` (the figures)."""

# What pixelcnnpp_train reads of a dataset's settings (its params: a change there, and only
# there, retrains; a new sampling method does not). This module imports no JAX.
TRAIN_KEYS = ("nr_resnet", "nr_filters", "nr_logistic_mix", "train")
