"""ffsolve.sample_autoregressive: the speculative samplers and the guarantee each one states.

* ``jacobi`` is the ``sequential`` sample for the same noise, bit for bit (and ffsolve.solve's
  jacobi on the same Gumbel-max map).
* ``sjd`` and ``coupled`` reproduce the model's distribution on a model whose distribution is known
  in closed form: a random Markov chain over K = 3 symbols, T = 8. Every position's marginal and
  every neighbouring pair's joint table gets a chi-square goodness-of-fit test.

  The false-alarm rate, stated: 4 runs (sjd and coupled, each without a window and with window 3)
  × 15 tables (8 marginals, 7 neighbouring pairs) = 60 tests; Bonferroni at a family-wise rate
  ALPHA = 1e-3 rejects a table at p < ALPHA / 60. So a correct sampler fails this test with
  probability at most 1e-3 over the seeds; the seeds are fixed, so the test is deterministic.
  The same test, run on the same samplers with a deliberately biased rule injected (always accept
  a draft; resample from p instead of the residual max(0, p − q)), must fail.
"""

import numpy as np
import pytest
import torch
from scipy.stats import chi2

import ffsolve
from ffsolve import speculative
from ffsolve.solvers.core import NotTriangularWarning

METHODS = ("sequential", "jacobi", "sjd", "coupled")

# ---------------------------------------------------------------------------------------------
# The Markov chain: x_0 ~ pi, x_t | x_{t-1} ~ P[x_{t-1}].

K, T, N = 3, 8, 20_000
ALPHA = 1e-3
RUNS = [("sjd", None), ("sjd", 3), ("coupled", None), ("coupled", 3)]
TABLES = T + (T - 1)
THRESHOLD = ALPHA / (len(RUNS) * TABLES)

_rng = np.random.default_rng(20260523)
PI = _rng.dirichlet(np.full(K, 3.0))
P = _rng.dirichlet(np.full(K, 3.0), size=K)


def markov_model(x):
    """(batch, T) -> (batch, T, K) log-probabilities; position t reads only x[:, t-1]."""
    first = torch.tensor(np.log(PI), dtype=torch.float32).expand(x.shape[0], 1, K)
    rest = torch.tensor(np.log(P), dtype=torch.float32)[x[:, :-1]]
    return torch.cat([first, rest], 1)


def exact_tables():
    """The exact marginal of every position and joint of every neighbouring pair."""
    marginals = [PI]
    for _ in range(T - 1):
        marginals.append(marginals[-1] @ P)
    pairs = [marginals[t][:, None] * P for t in range(T - 1)]
    return marginals, pairs


def p_values(x):
    """The chi-square p-value of every marginal and neighbouring-pair table of samples x."""
    x = x.cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    marginals, pairs = exact_tables()
    out = []
    for t in range(T):
        observed = np.bincount(x[:, t], minlength=K)
        out.append(_chi2_p(observed, marginals[t] * len(x)))
    for t in range(T - 1):
        observed = np.bincount(x[:, t] * K + x[:, t + 1], minlength=K * K)
        out.append(_chi2_p(observed, pairs[t].ravel() * len(x)))
    return np.array(out)


def _chi2_p(observed, expected):
    assert expected.min() >= 5, "too few samples for the chi-square approximation"
    stat = ((observed - expected) ** 2 / expected).sum()
    return chi2.sf(stat, len(expected) - 1)


def run(method, window, seed=7):
    return ffsolve.sample_autoregressive(markov_model, T, K, method, batch=N, window=window,
                                         seed=seed)


# ---------------------------------------------------------------------------------------------
# Distribution-exact: the chi-square tests pass for sjd and coupled, fail with a biased rule.

@pytest.mark.parametrize("method,window", RUNS)
def test_sjd_and_coupled_reproduce_the_chain(method, window):
    res = run(method, window)
    assert res.guarantee == "distribution-exact"
    p = p_values(res.x)
    assert len(p) == TABLES
    assert p.min() >= THRESHOLD, f"table {p.argmin()} rejected at p = {p.min():.2e}"


def _always_accept(r, p_draft, q_draft):
    return r >= 0


def _residual_is_p(p, q, ops):
    return p


@pytest.mark.parametrize("bias", [_always_accept, _residual_is_p], ids=["always_accept",
                                                                        "resample_from_p"])
@pytest.mark.parametrize("method,window", RUNS)
def test_a_biased_rule_fails_the_same_test(monkeypatch, method, window, bias):
    target = "_accepts" if bias is _always_accept else "_residual"
    monkeypatch.setattr(speculative, target, bias)
    p = p_values(run(method, window).x)
    assert p.min() < THRESHOLD, f"the biased rule passed (smallest p = {p.min():.2e})"


@pytest.mark.parametrize("window", [None, 3])
def test_sjd_drafts_from_another_distribution_fail_the_same_test(monkeypatch, window):
    """sjd draws its drafts by inverse CDF (``categorical``) from the p it records as q: drafts
    from a sharper distribution than the recorded one bias the samples, and the test sees it."""
    right = speculative._TorchOps.categorical

    def sharper(self, log_p):
        return right(self, torch.log_softmax(2 * log_p, -1))

    monkeypatch.setattr(speculative._TorchOps, "categorical", sharper)
    p = p_values(run("sjd", window).x)
    assert p.min() < THRESHOLD, f"the biased draft passed (smallest p = {p.min():.2e})"


def numpy_markov_model(x):
    """:func:`markov_model` in NumPy."""
    first = np.broadcast_to(np.log(PI), (x.shape[0], 1, K))
    return np.concatenate([first, np.log(P)[x[:, :-1]]], 1)


def test_numpy_sjd_and_coupled_reproduce_the_chain_and_a_biased_draft_fails(monkeypatch):
    """The NumPy backend draws its own way (inverse CDF for sjd's drafts, float64 noise): the
    same test, passed by both methods and failed by sjd with drafts from a sharper distribution."""
    def sample(method):
        return ffsolve.sample_autoregressive(numpy_markov_model, T, K, method, batch=N, seed=7,
                                             backend="numpy").x

    for method in ("sjd", "coupled"):
        assert p_values(sample(method)).min() >= THRESHOLD, method
    right = speculative._NumPyOps.categorical
    monkeypatch.setattr(speculative._NumPyOps, "categorical",
                        lambda self, log_p: right(self, 2 * log_p - np.logaddexp.reduce(
                            2 * log_p, -1, keepdims=True)))
    assert p_values(sample("sjd")).min() < THRESHOLD


def test_the_exact_methods_pass_the_test_too():
    # sequential and jacobi sample the chain too (by Gumbel-max on a fixed table).
    for method in ("sequential", "jacobi"):
        assert p_values(run(method, None).x).min() >= THRESHOLD


# ---------------------------------------------------------------------------------------------
# Sample-exact: jacobi is the sequential sample, bit for bit.

def dense_causal_model(kind, length, k, seed=0):
    """Logits at t from a random linear function of the one-hot values at every position < t."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(length, length, k, k)) * np.tril(np.ones((length, length)), -1)[
        :, :, None, None]
    bias = rng.normal(size=(length, k))
    if kind == "torch":
        w, b = torch.tensor(weights, dtype=torch.float32), torch.tensor(bias, dtype=torch.float32)
        return lambda x: torch.einsum("btj,stjk->bsk",
                                      torch.nn.functional.one_hot(x, k).float(), w) + b
    w, b = weights, bias
    return lambda x: np.einsum("btj,stjk->bsk", np.eye(k)[x], w) + b


@pytest.mark.parametrize("kind", ["torch", "numpy"])
@pytest.mark.parametrize("window", [None, 4])
def test_jacobi_is_the_sequential_sample_bit_for_bit(kind, window):
    length, k, batch = 12, 5, 16
    model = dense_causal_model(kind, length, k)
    res = ffsolve.sample_autoregressive(model, length, k, "jacobi", batch=batch, window=window,
                                        seed=3, backend=kind)
    ref = ffsolve.sample_autoregressive(model, length, k, "sequential", batch=batch,
                                        noise=res.noise)
    assert res.guarantee == ref.guarantee == "sample-exact"
    assert type(res.x) is type(ref.x)
    assert (res.x == ref.x).all()
    assert ref.model_calls == length and (ref.steps == length).all()
    assert res.causality_violation == 0
    # the same sample as ffsolve.solve's jacobi on the Gumbel-max map
    via_solve = ffsolve.solve(lambda x: (model(x) + res.noise).argmax(-1),
                              res.noise.argmax(-1), method="jacobi", axis=1)
    assert (via_solve.x == res.x).all()
    if window is None:
        assert res.model_calls <= via_solve.iterations
    # the same seed gives the same noise without passing it
    again = ffsolve.sample_autoregressive(model, length, k, "sequential", batch=batch, seed=3,
                                          backend=kind)
    assert (again.x == res.x).all()


def test_jacobi_warns_on_a_model_that_reads_its_own_position():
    length, k = 6, 3

    def leaky(x):  # position t reads x[:, t]: no causal shift
        return 3.0 * torch.nn.functional.one_hot((x + 1) % k, k).float()

    with pytest.warns(NotTriangularWarning, match="not exact"):
        res = ffsolve.sample_autoregressive(leaky, length, k, "jacobi", batch=4, seed=0)
    assert res.causality_violation > 0
    assert (res.steps <= length).all()


# ---------------------------------------------------------------------------------------------
# Steps and bookkeeping.

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("window", [None, 1, 3])
def test_every_method_takes_at_most_T_steps_per_row(method, window):
    batch = 64
    res = ffsolve.sample_autoregressive(markov_model, T, K, method, batch=batch, window=window,
                                        seed=11)
    assert res.method == method and res.guarantee == speculative.GUARANTEES[method]
    assert res.x.shape == (batch, T) and res.x.dtype == torch.long
    assert ((res.x >= 0) & (res.x < K)).all()
    assert res.steps.shape == (batch,) and (res.steps >= 1).all() and (res.steps <= T).all()
    assert res.model_calls == res.steps.max() == res.network_evaluations
    assert res.accepted.shape == (res.model_calls, batch)
    assert (res.accepted.sum(0) == T).all()
    assert ((res.accepted > 0).sum(0) == res.steps).all()  # a row fixes >= 1 position per step
    if window is not None and method != "sequential":
        assert res.accepted.max() <= window
    assert (res.fixed_at.max(1) == res.steps).all()
    assert (np.diff(res.fixed_at, axis=1) >= 0).all()
    if window == 1 or method == "sequential":
        assert (res.steps == T).all()
    assert res.mean_accepted == pytest.approx(T / res.mean_steps)


@pytest.mark.parametrize("method", ["jacobi", "sjd", "coupled"])
def test_deterministic_given_the_seed(method):
    a = ffsolve.sample_autoregressive(markov_model, T, K, method, batch=32, seed=5)
    b = ffsolve.sample_autoregressive(markov_model, T, K, method, batch=32, seed=5)
    c = ffsolve.sample_autoregressive(markov_model, T, K, method, batch=32, seed=6)
    assert torch.equal(a.x, b.x) and (a.steps == b.steps).all()
    assert not torch.equal(a.x, c.x)
    unseeded = ffsolve.sample_autoregressive(markov_model, T, K, method, batch=32)
    repeated = ffsolve.sample_autoregressive(markov_model, T, K, method, batch=32,
                                             seed=unseeded.seed)
    assert torch.equal(unseeded.x, repeated.x)


@pytest.mark.parametrize("method", METHODS)
def test_numpy_backend_and_a_bernoulli_model(method):
    logit = np.linspace(-2.0, 2.0, 10)

    def bernoulli(x):  # P(x_t = 1) = sigmoid(logit_t + x_{t-1})
        prev = np.concatenate([np.zeros((x.shape[0], 1)), x[:, :-1]], 1)
        return np.stack([np.zeros_like(prev), logit + prev], -1)

    res = ffsolve.sample_autoregressive(bernoulli, 10, 2, method, batch=8, seed=1,
                                        backend="numpy")
    assert isinstance(res.x, np.ndarray) and res.x.shape == (8, 10)
    assert set(np.unique(res.x)) <= {0, 1}
    assert (res.steps <= 10).all()


def test_a_module_with_trainable_weights_is_sampled_without_a_graph():
    class Chain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = torch.nn.Parameter(torch.zeros(K))
            self.next = torch.nn.Embedding(K, K)

        def forward(self, x):
            return torch.cat([self.first.expand(x.shape[0], 1, K), self.next(x[:, :-1])], 1)

    model = Chain()
    for method in METHODS:
        res = ffsolve.sample_autoregressive(model, T, K, method, batch=4, seed=0)
        assert not res.x.requires_grad and (res.steps <= T).all()


# ---------------------------------------------------------------------------------------------
# Bad input is refused with a message that names the argument.

@pytest.mark.parametrize("kwargs,match", [
    (dict(method="gibbs"), r"method must be one of \['coupled', 'jacobi', 'sequential', 'sjd'\]"),
    (dict(length=0), r"length must be a positive integer"),
    (dict(num_classes=1), r"num_classes must be at least 2"),
    (dict(num_classes=2.5), r"num_classes must be a positive integer"),
    (dict(batch=-1), r"batch must be a positive integer"),
    (dict(window=0), r"window must be a positive integer"),
    (dict(seed=-3), r"seed must be a non-negative integer"),
    (dict(backend="jax"), r"backend must be one of \['numpy', 'torch'\]"),
    (dict(backend="numpy", device="cpu"), r"device applies to backend 'torch' only"),
    (dict(noise=torch.zeros(2, T, K)), r"noise must have shape \(batch, length, num_classes\)"),
    (dict(noise=torch.zeros(4, T, K), method="sjd"), r"noise is not used by method 'sjd'"),
    (dict(noise=torch.zeros(4, T, K), backend="numpy"), r"backend is 'numpy' but noise"),
    (dict(noise=[[0.0]]), r"noise must be a PyTorch tensor or a NumPy array"),
])
def test_bad_arguments_are_refused_by_name(kwargs, match):
    args = dict(length=T, num_classes=K, method="jacobi", batch=4, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ffsolve.sample_autoregressive(markov_model, args.pop("length"), args.pop("num_classes"),
                                      args.pop("method"), **args)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model,match", [
    (lambda x: torch.zeros(x.shape[0], T, K + 1),
     r"model must return shape .* = \(4, 8, 3\), got \(4, 8, 4\)"),
    (lambda x: torch.zeros(T, x.shape[0], K), r"model must return shape"),
    (lambda x: torch.zeros(x.shape[0], T, K, dtype=torch.long), r"model must return floating"),
    (lambda x: np.zeros((x.shape[0], T, K)), r"model must return a torch array"),
])
def test_a_model_output_of_the_wrong_shape_is_refused(method, model, match):
    with pytest.raises(ValueError, match=match):
        ffsolve.sample_autoregressive(model, T, K, method, batch=4, seed=0)


def test_a_model_that_is_not_callable_is_refused():
    with pytest.raises(ValueError, match="model must be callable"):
        ffsolve.sample_autoregressive("gpt", T, K)
