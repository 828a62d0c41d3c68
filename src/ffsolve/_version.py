"""The library's version (``ffsolve.__version__``), in a leaf that the autotuner's keys read."""

__version__ = "0.1.0"
