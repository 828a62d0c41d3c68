"""The PixelCNN++ samplers beyond the contract test (tests/experiments/test_contract.py -k pixelcnnpp, which
checks every method against sequential on a grey 8×8 instance): the RGB-coupled path, the work
accounting of the cached paths, their traces, the tolerance's derivation, run names and refusals.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ffsolve

from ffsolve.experiments.pixelcnnpp import mixture
from ffsolve.experiments.pixelcnnpp.experiment import MeasureSettings, Training, runs
from ffsolve.experiments.pixelcnnpp.model import PixelCNNPP
from ffsolve.experiments.pixelcnnpp.system import (
    METHODS,
    Sampler,
    band_share,
    cached_tolerance,
    component_choices,
    float64_sample,
)
from ffsolve.kit import jax_key
from ffsolve.kit.harness import bitwise_equal

MIX = 3


def make_sampler(channels: int, size: int = 8, batch: int = 2) -> Sampler:
    model = PixelCNNPP(nr_resnet=1, nr_filters=8, nr_logistic_mix=MIX)
    shape = (batch, size, size, channels)
    params = model.init(jax.random.PRNGKey(channels), jnp.zeros(shape))["params"]
    return Sampler(model, params, mixture.draw_noise(jax.random.PRNGKey(7), shape, MIX))


@pytest.fixture(scope="module")
def grey():
    s = make_sampler(1)
    s.reference = np.asarray(s.run("sequential").x)
    return s


def test_cached_paths_trace_their_own_timed_computation(grey):
    """Traced twin == timed program bit for bit (same compiled loop); the trace starts at zeros and
    ends at the sample; per-sample steps never exceed the run's; the work is below one pass a step."""
    for method, block in (("sequential_cache", None), ("sequential_band_cache", None),
                          ("gs_jacobi_cache", 16), ("jacobi_gs_cache", 8),
                          ("jacobi_gs_band_cache", 8)):
        timed = grey.run(method, block)
        traced, arrays = grey.run(method, block, trace=True)
        assert traced.iterations == timed.iterations <= grey.length and timed.converged
        assert bitwise_equal([np.asarray(timed.x)], [np.asarray(traced.x)])
        assert arrays["error"].shape == (timed.iterations + 1, 2)
        assert np.all(arrays["error"][-1] == 0) and np.all(arrays["error"][0] > 0)
        if method == "jacobi_gs_band_cache":  # every block's band each step: over a full pass
            assert timed.network_evaluations > timed.iterations
        else:
            assert 0 < timed.network_evaluations < timed.iterations
        assert grey.tolerance().holds([np.asarray(timed.x)], [grey.reference]), method
    # The per-pixel cache computes each layer at each position once: one pass in all.
    per_pixel = grey.run("sequential_cache")
    assert per_pixel.iterations == grey.length and per_pixel.network_evaluations == 1.0
    assert grey.run("sequential_band_cache").network_evaluations > 8
    _, arrays = grey.run("gs_jacobi_cache", 16, trace=True)
    assert arrays["per_sample_iterations"].max() == len(arrays["change"])


def test_a_traced_twin_leaves_its_timed_program_nothing_to_compile(grey):
    """The harness warms each run up with its traced twin (``traced_warms_up``): on a fresh
    sampler, after the twin, the timed program compiles nothing (else its first timed call, or
    its calibration, would time a compile)."""
    from jax import monitoring

    from ffsolve.experiments.pixelcnnpp.system import BLOCKED, candidates
    from ffsolve.kit import RunSpec

    compiles = []
    monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **_: compiles.append(event) if "backend_compile" in event else None)
    # A new sampler compiles its own programs; grey's weights, noise and measured tolerance.
    sampler = Sampler(grey.model, grey.params, grey.noise)
    sampler._tolerance = grey.tolerance()
    # One run per kind of program: ffsolve.solve around the jitted f (whole map, blocks, the
    # map's window) and the cached loops (per pixel, blocks, Jacobi sweeps).
    kinds = ("jacobi", "gs_jacobi", "suffix_jacobi", "sequential_cache", "gs_jacobi_cache",
             "jacobi_gs_cache")
    runs = [RunSpec(m, 12 if m in BLOCKED else None) for m in kinds]
    for candidate in candidates(sampler, runs, tol=0.0):
        assert candidate.traced_warms_up
        candidate.traced()
        before = len(compiles)
        candidate.program()
        assert len(compiles) == before, f"{candidate.name} compiled after its traced twin"
    assert compiles  # the listener saw the twins compile


def test_gs_jacobi_cache_window_is_the_block_in_positions(grey):
    """A whole-image block is one Jacobi window, which tracks each sample's exact prefix: never
    more steps than jacobi (which stops on a step that changes nothing, batch-wide); a smaller
    block takes no fewer steps (the contract test covers a block of 12)."""
    jacobi = grey.run("jacobi").iterations
    whole = grey.run("gs_jacobi_cache", grey.length).iterations
    assert whole <= jacobi
    assert grey.run("gs_jacobi_cache", 16).iterations >= whole


def test_frontier_methods_recompute_only_rows_from_the_frontier(grey):
    """suffix_jacobi and sliding_jacobi through the map's row-band window: within the cached
    tolerance of sequential in at most T steps, for less work than one pass a step; the window is
    the map on its positions; and a window that never refreshes the rows it leaves behind (its
    cache kept from the first call) is caught by the same tolerance."""
    from ffsolve.experiments.pixelcnnpp.system import RowBandWindow

    tolerance = grey.tolerance()
    x = jnp.asarray(grey.reference)
    full = np.asarray(grey.f(x))
    for start, stop in ((0, grey.length), (9, 21), (40, grey.length)):  # non-decreasing starts
        got = np.asarray(grey.f.window(x, start, stop))
        assert tolerance.holds([got], [full[:, start:stop]]), (start, stop)
    assert grey.window.rows(9, 21) == (1, 2) and grey.window.rows(40, grey.length) == (4, 4)
    for method, block in (("suffix_jacobi", None), ("sliding_jacobi", 12)):
        res = grey.run(method, block)
        assert res.converged and res.iterations <= grey.length
        assert 0 < res.network_evaluations < res.iterations
        assert tolerance.holds([np.asarray(res.x)], [grey.reference]), method

    class Stale(RowBandWindow):  # the mutation: rows above the band from the first call's cache
        def __call__(self, x, start, stop):
            kept = self._cache
            out = super().__call__(x, start, stop)
            if kept is not None and start > 0:
                self._cache = kept
            return out

    stale = Stale(grey)
    stale._bands = grey.window._bands  # the same compiled bands: only the cache handling differs
    wrong = ffsolve.solve(ffsolve.windowed(grey.f.f, stale, stale.cost, bitwise=False), grey.initial(),
                          method="sliding_jacobi", block_size=12, axis=1)
    assert not tolerance.holds([np.asarray(wrong.x)], [grey.reference])


def test_jacobi_gs_cache_stops_on_its_exact_prefix():
    """On a map that ignores its input (every kernel zero), the first sweep makes block 0 exact and
    moves every block, the second moves none, so every block is exact after two sweeps: 2 × block
    steps, not T. Each sweep's opening step is one full pass, every other step one band per block."""
    sampler = make_sampler(1)
    flat = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.zeros_like(a) if "kernel" in jax.tree_util.keystr(path) else a,
        sampler.params)
    constant = Sampler(sampler.model, flat, sampler.noise)
    reference = np.asarray(constant.run("sequential").x)
    block = 12  # blocks straddle rows (row-aligned blocks: the trace test above)
    blocks = -(-constant.length // block)
    span = 2  # a block of 12 straddles two rows of 8
    band = blocks * band_share(span, 8, 8, nr_resnet=1)
    for method in ("jacobi_gs_cache", "jacobi_gs_band_cache"):
        result = constant.run(method, block)
        assert result.converged and result.iterations == 2 * block
        assert np.array_equal(np.asarray(result.x), reference) or np.allclose(
            np.asarray(result.x), reference, atol=constant.tolerance().atol, rtol=0)
        if method == "jacobi_gs_band_cache":
            assert result.network_evaluations == pytest.approx(2 + (2 * block - 2) * band)
        else:  # two fills, then one position per block (a few rows of u, coarse positions)
            assert 2 < result.network_evaluations < 2 + (2 * block - 2) * blocks / 8


def test_band_share_counts_positions_per_layer():
    assert band_share(28, 28, 28, nr_resnet=5) == 1.0
    one_row = band_share(1, 28, 28, nr_resnet=1)
    # Two rows at every scale (the band and the row above): 2/28 of scale 1, 2/14, 2/7.
    assert 2 / 28 < one_row < 2 / 7
    assert band_share(4, 28, 28, 1) > one_row


def test_tolerance_is_the_float32_samples_own_error_against_float64(grey):
    tolerance = grey.tolerance()
    assert tolerance is grey.tolerance()  # measured once per sampler
    x64, choice64 = float64_sample(grey.model, grey.params, grey.noise, grey.reference)
    assert x64.dtype == np.float64 and choice64.shape == (2, 8, 8)
    error = float(np.abs(grey.reference.astype(np.float64) - x64).max())
    assert 0 < error < 1e-4 and tolerance.atol == pytest.approx(4 * error) and tolerance.rtol == 0
    assert "float64" in tolerance.why and "component" in tolerance.why
    # Without weights and noise there is nothing to measure: the a-priori estimate, far looser.
    apriori = cached_tolerance(grey.model)
    assert "a-priori" in apriori.why and apriori.atol > 10 * tolerance.atol


class OffByOne(Sampler):
    """``sequential_cache`` with one cache entry off by one position: at raster position
    ``POSITION`` the step computes (and caches) the position before it again and samples the
    pixel from that position's mixture parameters; later pixels read the stale entry."""

    POSITION = 27  # row 3, column 3: not the start of a row

    def _pixel_step(self, state, noise, read=None):
        t = state[2]
        return super()._pixel_step(state, noise, read=jnp.where(t == self.POSITION, t - 1, t))


def test_tolerance_rejects_a_cache_entry_off_by_one_position(grey):
    tolerance = grey.tolerance()
    for method, block in (("sequential_cache", None), ("jacobi_gs_cache", 8)):
        right = np.asarray(grey.run(method, block).x)
        assert tolerance.holds([right], [grey.reference]), method
    wrong = np.asarray(OffByOne(grey.model, grey.params, grey.noise).run("sequential_cache").x)
    assert np.array_equal(wrong[:, :OffByOne.POSITION], np.asarray(
        grey.run("sequential_cache").x)[:, :OffByOne.POSITION])  # right up to the entry
    assert not tolerance.holds([wrong], [grey.reference])


def test_component_choices_match_the_sampled_pixels(grey):
    """On the sequential sample, each pixel's picked component is the Gumbel-max of its logits."""
    choice, margin = component_choices(grey.model, grey.params, grey.noise, grey.reference)
    assert choice.shape == (2, 8, 8) and choice.min() >= 0 and choice.max() < MIX
    assert np.all(margin > 0)


@pytest.mark.slow  # the RGB path compiles everything again (~30 s on two shared cores)
def test_rgb_cached_paths_match_sequential_within_tolerance():
    s = make_sampler(3, batch=1)
    reference = np.asarray(s.run("sequential").x)
    atol = s.tolerance().atol
    for method, block in (("jacobi", None), ("sequential_cache", None), ("gs_jacobi_cache", 12),
                          ("jacobi_gs_cache", 12)):
        out = np.asarray(s.run(method, block).x)
        if method == "jacobi":
            assert np.array_equal(out, reference)
        else:
            np.testing.assert_allclose(out, reference, atol=atol)


def test_bad_requests_are_refused_naming_the_problem(grey):
    with pytest.raises(ValueError, match="method must be one of"):
        grey.run("newton")
    with pytest.raises(ValueError, match="needs a block size"):
        grey.run("gs_jacobi")
    with pytest.raises(ValueError, match="takes no block size"):
        grey.run("jacobi", 4)
    with pytest.raises(ValueError, match="does not fit 64 positions"):
        grey.run("gs_jacobi_cache", 65)


def test_runs_are_named_by_block_size_in_positions():
    settings = MeasureSettings(methods=METHODS, block_sizes=(28, 112), tol=0.0, nr_resnet=1, nr_filters=4,
                        nr_logistic_mix=2, checkpoint=None, batch=1,
                        train=Training(1, 1, 0.1, 0.5, 1, 1))
    assert runs(settings) == [
        "sequential", "jacobi", "gs_jacobi_b28", "gs_jacobi_b112", "jacobi_gs_b28", "jacobi_gs_b112",
        "suffix_jacobi", "sliding_jacobi_b28", "sliding_jacobi_b112", "sequential_cache", "gs_jacobi_cache_b28", "gs_jacobi_cache_b112", "jacobi_gs_cache_b28",
        "jacobi_gs_cache_b112", "sequential_band_cache", "jacobi_gs_band_cache_b28",
        "jacobi_gs_band_cache_b112"]


def test_noise_streams_are_reproducible_and_independent_by_use():
    a = jax_key(1234, "pixelcnnpp", "mnist", "noise")
    assert np.array_equal(a, jax_key(1234, "pixelcnnpp", "mnist", "noise"))
    assert not np.array_equal(a, jax_key(1234, "pixelcnnpp", "mnist", "init"))
    assert not np.array_equal(a, jax_key(1234, "pixelcnnpp", "cifar10", "noise"))


@pytest.mark.parametrize("methods,baseline,allow", [
    (("sequential", "sequential_cache", "jacobi", "auto"), "sequential_cache", True),
    (("sequential", "sequential_cache", "jacobi", "auto"), "sequential_cache", False),
    (("sequential", "jacobi", "auto"), "sequential", False)])
def test_auto_takes_the_strongest_sequential_loop_as_its_baseline(grey, methods, baseline, allow):
    """With the per-pixel cached loop configured, auto takes it (not the naive loop) as its
    baseline: its slice predicts it and bounds the parallel runs, and it runs last, cut by the
    best time. It is only within a tolerance of sequential, so an exact auto run takes it only
    where within-tolerance answers are allowed; else it is never run, and the answer is bitwise."""
    from ffsolve.experiments.pixelcnnpp.experiment import measured_candidates
    from ffsolve.kit.auto import AutoSettings

    settings = MeasureSettings(methods=methods, block_sizes=(), tol=0.0, nr_resnet=1, nr_filters=8,
                        nr_logistic_mix=MIX, checkpoint=None, batch=2,
                        train=Training(1, 1, 0.1, 0.5, 1, 1))
    auto = measured_candidates(grey, settings, {}, AutoSettings(allow_within_tolerance=allow))[-1]
    assert auto.spec.method == "auto"
    result = auto.program()
    record = auto.extra["auto"]
    tried = [p["run"] for p in record["pilots"] if p["seconds"] is not None]
    assert record["baseline"] == baseline and record["chosen"] in methods and result.converged
    if baseline == "sequential_cache" and allow:
        assert record["predicted_baseline_s"] > 0
        pilot = {p["run"]: p for p in record["pilots"]}[baseline]
        # It runs last, unless its slice already predicts a loss to a faster finished run (the
        # machine decides which: the order and the skip are what is checked, not the winner).
        assert tried[-1] == baseline or (
            pilot["seconds"] is None and pilot["why"].startswith("not run: its slice predicts"))
    elif baseline == "sequential_cache":
        assert baseline not in tried and record["chosen"] != baseline
        assert record["predicted_baseline_s"] is None
    if record["chosen"] != "sequential_cache":
        assert np.array_equal(np.asarray(result.x), np.asarray(grey.run("sequential").x))
