"""The PixelCNN++ samplers agree with ``sequential`` on the same weights and noise.

Grey 8×8 digits and RGB 8×8 photo patches (the RGB-coupled path), a tiny model, two images.
Methods that call the same compiled map as ``sequential`` must match bit for bit; the cached
ones within ``exact_match_tolerance`` (float rounding of differently shaped computations).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ffsolve.experiments.pixelcnnpp import keys, runs, settings
from ffsolve.experiments.pixelcnnpp_samplers import METHODS, Sampler, compare
from ffsolve.models import pixelcnnpp_mixture as mixture
from ffsolve.models.pixelcnnpp import PixelCNNPP

SHAPE = (2, 8, 8)
MIX = 3


# The RGB pass compiles everything a second time (another ~20 s on two shared cores): slow.
@pytest.fixture(scope="module", params=[1, pytest.param(3, marks=pytest.mark.slow)],
                ids=["grey", "rgb"])
def sampler(request):
    channels = request.param
    model = PixelCNNPP(nr_resnet=1, nr_filters=8, nr_logistic_mix=MIX)
    shape = SHAPE + (channels,)
    params = model.init(jax.random.PRNGKey(channels), jnp.zeros(shape))["params"]
    noise = mixture.draw_noise(jax.random.PRNGKey(7), shape, MIX)
    s = Sampler(model, params, noise)
    s.reference = s.run("sequential").images
    return s


@pytest.mark.parametrize("method,rows", [
    ("jacobi", None), ("gs_jacobi", 2), ("jacobi_gs", 1), ("sequential_cache", None),
    ("gs_jacobi_cache", 3),
])
def test_every_method_reaches_the_sequential_sample(sampler, method, rows):
    out = sampler.run(method, rows, trace=method.endswith("_cache"))
    check = compare(out.images, sampler.reference, method)
    assert check["exact_match"], check
    if check["exact_match_tolerance"] == 0:
        assert check["bitwise_equal"]
    assert 1 <= out.iterations <= sampler.length and out.converged
    if out.per_sample_iterations is not None:
        assert out.per_sample_iterations.max() == out.iterations
    if out.error is not None:  # the trace ends at the final iterate and starts at zeros
        assert out.error.shape == (out.iterations + 1, SHAPE[0])
        assert np.all(out.error[-1] == 0) and np.all(out.error[0] > 0)


def test_sequential_takes_h_times_w_passes_and_noise_decides_the_sample(sampler):
    out = sampler.run("sequential", trace=True)
    assert out.iterations == sampler.length
    np.testing.assert_array_equal(out.images, sampler.reference)
    assert np.all(np.abs(out.images) <= 1)
    # The two images used different noise, so they differ.
    assert not np.array_equal(out.images[0], out.images[1])


def test_noise_keys_are_reproducible_and_independent_by_purpose():
    a, b = keys(1234), keys(1234)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["init"], a["noise"]) and not np.array_equal(keys(1)["noise"], a["noise"])


def test_bad_requests_are_refused_naming_the_problem(sampler):
    with pytest.raises(ValueError, match="method must be one of"):
        sampler.run("newton")
    with pytest.raises(ValueError, match="needs block size"):
        sampler.run("gs_jacobi")
    with pytest.raises(ValueError, match="does not fit"):
        sampler.run("gs_jacobi_cache", rows=9)
    with pytest.raises(ValueError, match="pixelcnnpp.settings.cifar10"):
        settings({"pixelcnnpp": {"settings": {"mnist": {}}}}, "cifar10")


def test_runs_follow_the_configured_methods_and_block_rows():
    section = {"methods": list(METHODS),
               "settings": {"mnist": {"block_rows": {"jacobi_gs": 1, "gs_jacobi": 4, "gs_jacobi_cache": 5}}}}
    got = {name: rows for name, _, rows in runs(section, "mnist")}
    assert got == {"sequential": None, "sequential_cache": None, "jacobi": None, "jacobi_gs": 1,
                   "gs_jacobi": 4, "gs_jacobi_cache": 5}
