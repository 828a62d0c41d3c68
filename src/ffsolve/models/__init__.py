"""Models, one module per experiment (PyTorch, or Flax for PixelCNN++)."""
