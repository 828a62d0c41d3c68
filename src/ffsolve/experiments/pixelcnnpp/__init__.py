"""PixelCNN++ sampling (paper §2.4–2.8) in JAX/Flax. ``model.py`` (the network with its row-band
activation cache, checkpoints), ``pixel_cache.py`` (the per-pixel activation cache on the same
parameters), ``mixture.py`` (the discretized logistic mixture: likelihood and noise-driven
sampling), ``system.py`` (the sampling map, the cached samplers, the candidates),
``experiment.py`` (train and measure jobs), ``plots.py`` (the figures)."""
