"""Issue 23: the price of each guarantee. Fixed-noise Jacobi (sample-exact), speculative Jacobi
decoding (SJD, distribution-exact, independent drafts) and coupled drafts (SCD,
distribution-exact) against the sequential sampler, on the models the workflow already trains
(the rnn_forward GRU and the default PixelCNN++), through :func:`ffsolve.sample_autoregressive`."""
