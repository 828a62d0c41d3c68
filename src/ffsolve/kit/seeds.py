"""Named seed streams: one root seed in the config, an independent stream for every use of it.

``seed_stream(1234, "made", "mnist", "sample_noise")`` is a fixed 32-bit integer for that name, the
same on every machine and Python version (names are hashed with CRC-32, not ``hash()``, which is
salted per process). Distinct names give unrelated streams (NumPy's ``SeedSequence`` mixes them), so
adding a new use never shifts the numbers of an existing one, unlike offsets added to the seed.
"""

from __future__ import annotations

import zlib

import numpy as np


def seed_stream(seed: int, *names: str) -> int:
    """A seed in [0, 2**32) for the stream ``names`` under the root ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"a seed stream needs one or more non-empty names, got {names!r}")
    words = [int(seed) % 2**32, int(seed) // 2**32 % 2**32]
    words += [zlib.crc32(name.encode()) for name in names]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint32)[0])


def numpy_rng(seed: int, *names: str) -> np.random.Generator:
    return np.random.default_rng(seed_stream(seed, *names))


def torch_generator(seed: int, *names: str):
    """A CPU ``torch.Generator`` for the stream (draw on the CPU, then move: same on every device)."""
    import torch

    return torch.Generator().manual_seed(seed_stream(seed, *names))


def jax_key(seed: int, *names: str):
    import jax

    return jax.random.PRNGKey(seed_stream(seed, *names))
