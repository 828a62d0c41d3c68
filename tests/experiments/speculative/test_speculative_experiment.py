"""The speculative experiment (issue 23) on tiny models, through its job function (not the DAG):
records in the results schema, jacobi bit for bit the sequential sample, the distribution check
passing for sjd and coupled and failing for a sampler with a biased acceptance rule, the source
models' teacher-forced passes (causal, normalised), and the figure and tables."""

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ffsolve.experiments.speculative import system  # noqa: E402
from ffsolve.experiments.speculative.experiment import MeasureSettings, measure, measure_job  # noqa: E402
from ffsolve.kit import read_json, validate_record  # noqa: E402

METHODS = ("sequential", "jacobi", "sjd", "coupled")


def _gru(hidden=4, bias=-2.0, seed=0):
    """A small next-pixel GRU far from the uniform distribution (P(on) about sigmoid(bias)), so a
    sampler that keeps its uniform first drafts is easy to tell apart."""
    from ffsolve.experiments.rnn_forward.model import NextPixelGRU

    torch.manual_seed(seed)
    net = NextPixelGRU(hidden)
    with torch.no_grad():
        net.head.bias.fill_(bias)
        net.head.weight.mul_(3.0)
    return net.eval()


@pytest.fixture(scope="module")
def gru_checkpoint(tmp_path_factory):
    from ffsolve.experiments.rnn_forward.model import save_checkpoint

    path = tmp_path_factory.mktemp("gru") / "model.pt"
    save_checkpoint(_gru(), path, {})
    return path


def _paths(root, runs=METHODS):
    return ({r: str(root / r / "metrics.json") for r in runs}, {r: str(root / r / "trace.npz") for r in runs})


def _settings(**kw):
    base = dict(methods=METHODS, samples=16, sequential_rows=None, window=None, repeats=1, alpha=0.01)
    return MeasureSettings(**{**base, **kw})


def _short_gru(length=64):
    from ffsolve.experiments.rnn_forward.autoregressive import NextPixelDistributions

    return NextPixelDistributions(_gru(), length=length)


def test_job_on_the_gru_checkpoint(tmp_path, gru_checkpoint, monkeypatch):
    """The rule's adapter end to end on a checkpoint (over 96 positions instead of 784, for time):
    valid records, jacobi bitwise, step counts within T, and the check passing for sjd and coupled."""
    from ffsolve.experiments.rnn_forward import autoregressive

    monkeypatch.setattr(autoregressive, "LENGTH", 96)
    metrics, traces = _paths(tmp_path)
    params = SimpleNamespace(settings={"methods": list(METHODS), "samples": 6, "sequential_rows": None,
                                       "window": None, "repeats": 1, "alpha": 0.01},
                             runs=list(METHODS), seed=3, device="cpu",
                             timing={"repeats": 1, "warmup": 0, "threads": None})
    job = SimpleNamespace(input=SimpleNamespace(checkpoint=str(gru_checkpoint)),
                          output=SimpleNamespace(metrics=list(metrics.values()), traces=list(traces.values())),
                          params=params, threads=1, wildcards=SimpleNamespace(dataset="rnn_forward_mnist"))
    records = measure_job(job)
    for run in METHODS:
        record = read_json(metrics[run])
        validate_record(record, run)
        assert record["sequence_length"] == 96 and record["steps_max"] <= 96
        assert record["guarantee"] == ("sample-exact" if run in ("sequential", "jacobi") else "distribution-exact")
        with np.load(traces[run]) as trace:
            assert trace["fixed_at"].shape == (6, 96) and trace["samples"].shape == (6, 96)
            assert trace["accepted"].sum(0).tolist() == [96] * 6
    assert records["sequential"]["steps_mean"] == 96
    assert records["jacobi"]["bitwise_equal"] and records["jacobi"]["jacobi_bitwise_equal_sequential"]
    assert not records["sjd"]["bitwise_equal"]
    assert records["sjd"]["distribution_check"]["passed"] and records["coupled"]["distribution_check"]["passed"]
    assert records["sequential"]["distribution_reference"] == "sequential"


def test_distribution_check_passes_for_sjd_and_coupled_and_fails_for_a_biased_sampler(tmp_path, monkeypatch):
    import ffsolve.speculative as speculative

    model = _short_gru()
    fair = measure(_settings(samples=32), dataset="rnn_forward_mnist", seed=5, checkpoint=None,
                        metrics=_paths(tmp_path / "fair")[0], model=model)
    assert fair["jacobi"]["bitwise_equal"]
    for method in ("sjd", "coupled"):
        check = fair[method]["distribution_check"]
        assert check["passed"], check
        assert check["tests"] == 4 and check["threshold"] == pytest.approx(0.01 / 4)
    # Always accepting a draft keeps the uniform first drafts: the check must see it.
    monkeypatch.setattr(speculative, "_accepts", lambda r, p, q: r >= 0)
    biased = measure(_settings(samples=32), dataset="rnn_forward_mnist", seed=5, checkpoint=None,
                          metrics=_paths(tmp_path / "biased")[0], model=model)
    for method in ("sjd", "coupled"):
        check = biased[method]["distribution_check"]
        assert not check["passed"], check
        assert check["statistics"]["mean_intensity"]["p_value"] < check["threshold"]
    assert biased["jacobi"]["bitwise_equal"]  # the rule is not jacobi's


def test_the_check_is_bonferroni_over_every_test():
    rng = np.random.default_rng(0)
    same = {m: {s: rng.normal(size=50) for s in system.STATISTICS} for m in ("ref", "a")}
    shifted = {**same, "b": {s: rng.normal(size=50) + 3.0 for s in system.STATISTICS}}
    out = system.distribution_check(shifted, "ref", ["a", "b"], alpha=0.05)
    assert out["a"]["passed"] and not out["b"]["passed"]
    assert out["a"]["threshold"] == pytest.approx(0.05 / 4)


def test_gru_source_is_causal_and_two_valued():
    model = _short_gru(length=20)
    x = torch.randint(0, 2, (3, 20))
    out = model(x)
    assert out.shape == (3, 20, 2) and torch.all(out[..., 0] == 0)
    y = x.clone()
    y[:, 7:] = 1 - y[:, 7:]  # changing positions >= 7 leaves positions <= 7 as they were
    assert torch.equal(model(y)[:, :8], out[:, :8])


@pytest.fixture(scope="module")
def pixelcnnpp_checkpoint(tmp_path_factory):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from ffsolve.experiments.pixelcnnpp.model import PixelCNNPP, architecture, save_checkpoint

    model = PixelCNNPP(nr_resnet=1, nr_filters=4, nr_logistic_mix=2)
    # Random weights of the right shapes (an eager init compiles every layer's ops: 25 s here).
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.3, s.dtype), shapes)
    path = tmp_path_factory.mktemp("pixelcnnpp") / "model.msgpack"
    save_checkpoint(params, path, architecture(model, (8, 8, 1)))
    return path


def test_pixelcnnpp_source_is_causal_and_normalised(pixelcnnpp_checkpoint):
    from ffsolve.experiments.pixelcnnpp.autoregressive import load

    model = load(pixelcnnpp_checkpoint)
    assert (model.length, model.num_classes, model.backend) == (64, 256, "numpy")
    x = np.random.default_rng(0).integers(0, 256, (2, 64))
    out = model(x)
    assert out.shape == (2, 64, 256) and out.dtype == np.float32
    np.testing.assert_allclose(np.log(np.exp(out.astype(np.float64)).sum(-1)), 0.0, atol=1e-3)
    y = x.copy()
    y[:, 30:] = 255 - y[:, 30:]
    assert np.array_equal(model(y)[:, :31], out[:, :31])


def test_job_on_a_pixelcnnpp_checkpoint_with_sequential_on_fewer_rows(tmp_path, pixelcnnpp_checkpoint):
    metrics, traces = _paths(tmp_path)
    records = measure(_settings(samples=4, sequential_rows=2, alpha=0.001), dataset="pixelcnnpp_mnist",
                           seed=2, checkpoint=pixelcnnpp_checkpoint, metrics=metrics, traces=traces,
                           device="cpu")
    assert records["sequential"]["rows"] == 2 and records["jacobi"]["rows"] == 4
    assert records["sequential"]["quantity"] == "sample_2" and records["jacobi"]["quantity"] == "sample_4"
    assert records["jacobi"]["bitwise_equal"] and records["jacobi"]["compared_rows"] == 2
    assert records["sjd"]["distribution_reference"] == "jacobi"
    assert all(r["steps_max"] <= 64 for r in records.values())


def test_figure_and_tables(tmp_path, gru_checkpoint):
    from ffsolve.experiments.speculative import plots
    from ffsolve.kit import load_runs, save

    metrics, traces = _paths(tmp_path)
    measure(_settings(samples=4), dataset="rnn_forward_mnist", seed=1, checkpoint=None,
                 metrics=metrics, traces=traces, model=_short_gru(32))
    runs = load_runs(list(metrics.values()), list(traces.values()))
    save(plots.steps_figure(runs), str(tmp_path / "steps.png"))
    assert (tmp_path / "steps.png").stat().st_size > 0
    table = plots.steps_table(runs)
    assert table.count("\n| ") == 5 and "distribution-exact" in table and "| 100% |" in table
    published = plots.published_table(runs)
    assert "2.22x" in published and "4.2x" in published and "7B" in published


def test_contract_candidates_are_the_sample_exact_pair_and_the_gumbel_max_map():
    import ffsolve
    from ffsolve.kit import measure as kit_measure

    found = system.contract_candidates()
    sampler = kit_measure(found["sampler"], repeats=1, warmup=0)
    assert set(sampler) == {"sequential", "jacobi"}
    assert sampler["jacobi"].bitwise_equal and sampler["jacobi"].result.iterations <= 12
    solved = kit_measure(found["gumbel_max_map"], repeats=1, warmup=0)
    assert {m.result.method for m in solved.values()} == set(ffsolve.available_methods())
    assert all(m.bitwise_equal and m.result.iterations <= 12 for m in solved.values())
    # The map's fixed point is the sampler's sequential sample.
    assert np.array_equal(solved["sequential"].result.x, sampler["sequential"].result.x)


def test_a_window_caps_the_positions_fixed_per_step(tmp_path):
    records = measure(_settings(samples=8, window=8), dataset="rnn_forward_mnist", seed=4,
                           checkpoint=None, metrics=_paths(tmp_path)[0], traces=_paths(tmp_path)[1],
                           model=_short_gru(48))
    assert records["jacobi"]["bitwise_equal"] and records["jacobi"]["window"] == 8
    assert records["sequential"]["window"] is None
    for method in ("jacobi", "sjd", "coupled"):
        with np.load(tmp_path / method / "trace.npz") as trace:
            assert trace["accepted"].max() <= 8 and records[method]["steps_min"] >= 48 // 8
