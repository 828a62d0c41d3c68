"""The samplers as harness programs, the per-sample statistics, and the distribution check.

A *source model* is what a source experiment's ``autoregressive.load`` returns (see
:mod:`ffsolve.experiments.speculative.layout`): a callable giving, for a whole ``(batch, T)``
draft, every position's ``(batch, T, K)`` log-probabilities in one call, with ``length``,
``num_classes``, ``backend`` (``"torch"`` or ``"numpy"``: the arrays it takes) and a
``description`` for the records.

Every method samples the same rows from the same seed: ``sequential``, ``jacobi`` and ``coupled``
read one Gumbel table drawn up front (:func:`gumbel_table`), ``sjd`` and ``coupled`` take their
fresh draws from the same seed. ``sequential`` may run on the first rows only (the costly
reference: T calls), with those rows of the table, so ``jacobi`` is checked bit for bit on them.

The distribution check (:func:`distribution_check`) compares ``sjd`` and ``coupled`` with the
sample-exact samples (``sequential``'s where it ran on every row, else ``jacobi``'s, which equal
the sequential sample of their noise; the check is recorded) by two-sample Kolmogorov–Smirnov
tests on two statistics per sample: its negative log-likelihood under the model in bits per
position, and its mean intensity; Bonferroni over every test of the job at a family-wise
false-alarm rate ``alpha``.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np

import ffsolve
from ffsolve.experiments.speculative.layout import source_of

Array = Any
STATISTICS = ("bits_per_dim", "mean_intensity")
CHECKED = ("sjd", "coupled")  # the distribution-exact methods the check tests


def load_model(dataset: str, checkpoint, device: str = "auto"):
    """The source model of ``dataset`` (its experiment's ``autoregressive.load``)."""
    source, _, _ = source_of(dataset)
    module = importlib.import_module(f"ffsolve.experiments.{source}.autoregressive")
    from ffsolve.kit import jax_device, torch_device

    chosen = (jax_device if module.FRAMEWORK == "jax" else torch_device)(device)
    return module.load(checkpoint, device=chosen)


def gumbel_table(model, rows: int, seed: int) -> Array:
    """``(rows, T, K)`` standard Gumbel noise in the model's backend (float32 for PyTorch on the
    model's device, float64 for NumPy, as the library draws them), from ``seed``."""
    shape = (rows, model.length, model.num_classes)
    if model.backend == "torch":
        import torch

        gen = torch.Generator().manual_seed(seed)
        u = torch.rand(shape, generator=gen).clamp_min(torch.finfo(torch.float32).tiny)
        return (-torch.log(-torch.log(u))).to(model.device)
    u = np.maximum(np.random.default_rng(seed).random(shape), np.finfo(np.float64).tiny)
    return -np.log(-np.log(u))


def to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def sample(model, method: str, *, rows: int, seed: int, noise, window: Optional[int] = None):
    """One :func:`ffsolve.sample_autoregressive` call: ``rows`` samples by ``method``."""
    if method != "sjd":  # the table's first rows (its backend and device come with it)
        where = {"noise": noise[:rows]}
    else:  # fresh noise only
        where = {"backend": model.backend, "device": model.device if model.backend == "torch" else None}
    return ffsolve.sample_autoregressive(
        model, model.length, model.num_classes, method, batch=rows, seed=seed,
        window=None if method == "sequential" else window, **where)


def as_solve_result(res) -> ffsolve.SolveResult:
    """The harness's record of a :class:`ffsolve.SampleResult`: ``iterations`` are the model
    calls (steps of the slowest row), every position fixed."""
    return ffsolve.SolveResult(
        x=res.x, iterations=int(res.model_calls), converged=True, method=res.method,
        block_size=None, tol=0.0, sequence_length=int(res.sequence_length),
        network_evaluations=float(res.network_evaluations),
        stopped_by="sequential" if res.method == "sequential" else "exact_prefix")


def program(model, method: str, *, rows: int, seed: int, noise, window, latest: dict):
    """A zero-argument harness program; it keeps its last :class:`ffsolve.SampleResult` in
    ``latest[method]`` (every timed call is checked equal to the first, so it is the first's)."""
    def run():
        res = sample(model, method, rows=rows, seed=seed, noise=noise, window=window)
        latest[method] = res
        return as_solve_result(res)
    return run


def candidates(model, methods: Sequence[str], *, rows: int, seed: int, noise, window: Optional[int] = None,
               sequential_rows: Optional[int] = None, latest: Optional[dict] = None) -> list:
    """One harness :class:`ffsolve.kit.Candidate` per method: ``rows`` samples each from the same
    seed and noise table, ``sequential`` on its first ``sequential_rows`` rows (``None``: all).
    ``latest`` receives each method's last :class:`ffsolve.SampleResult`."""
    from ffsolve.kit import Candidate

    ref_rows = rows if sequential_rows is None else min(sequential_rows, rows)
    latest = {} if latest is None else latest
    return [Candidate(method, program(model, method, rows=ref_rows if method == "sequential" else rows,
                                      seed=seed, noise=noise, window=window, latest=latest))
            for method in methods]


class MarkovChain:
    """A tiny source model: a random Markov chain over ``num_classes`` symbols (NumPy), position t's
    distribution the transition row of ``x[:, t-1]`` (position 0: a random initial law)."""

    backend = "numpy"
    device = None

    def __init__(self, length: int = 12, num_classes: int = 3, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.length, self.num_classes = length, num_classes
        self.first = np.log(rng.dirichlet(np.ones(num_classes)))
        self.table = np.log(rng.dirichlet(np.ones(num_classes), size=num_classes))
        self.description = {"model": "markov_chain", "positions": length}

    def __call__(self, x):
        out = np.empty(x.shape + (self.num_classes,))
        out[:, 0] = self.first
        out[:, 1:] = self.table[x[:, :-1]]
        return out


def contract_candidates() -> dict[str, list]:
    """Two instances on a tiny Markov chain, each measured against its own ``sequential``:

    * ``sampler``: :func:`ffsolve.sample_autoregressive`'s ``sequential`` and ``jacobi``, the
      sample-exact pair, so ``jacobi`` must equal ``sequential`` bit for bit;
    * ``gumbel_max_map``: the same sampling as the triangular map
      x ↦ argmax(log p(x) + G) along the positions, by every method of ``ffsolve.solve``
      (blocked ones at a block size that does not divide T).

    ``sjd`` and ``coupled`` are distribution-exact (no particular sequential sample):
    tests/test_speculative.py checks their law exactly on such a chain,
    tests/experiments/speculative/test_speculative_experiment.py this experiment's check of them."""
    from ffsolve.kit import Candidate, RunSpec, uses_blocks

    model = MarkovChain()
    noise = gumbel_table(model, 4, 0)
    sampler = []
    for method in ("sequential", "jacobi"):
        def sampled(method=method):
            return as_solve_result(sample(model, method, rows=4, seed=0, noise=noise))

        def traced(method=method):  # the same run, with what it fixed at each step
            res = sample(model, method, rows=4, seed=0, noise=noise)
            return as_solve_result(res), {"accepted": res.accepted, "fixed_at": res.fixed_at}

        sampler.append(Candidate(method, sampled, traced))

    def f(x):
        return np.argmax(model(x) + noise, axis=-1)

    x0 = np.argmax(noise, axis=-1)
    solved = []
    for method in ffsolve.available_methods():
        spec = RunSpec(method, 5 if uses_blocks(method) else None)

        def solved_program(spec=spec, trace=False):
            return ffsolve.solve(f, x0, method=spec.method, block_size=spec.block_size, axis=1,
                                 trace=trace)

        def traced(program=solved_program):
            result = program(trace=True)
            return result, {"change": np.asarray(result.trace.change),
                            "error": np.asarray(result.trace.error)}

        solved.append(Candidate(spec, solved_program, traced))
    return {"sampler": sampler, "gumbel_max_map": solved}


# -- statistics and the check -------------------------------------------------------------------
def statistics(model, x) -> dict[str, np.ndarray]:
    """Per sample: its negative log-likelihood under the model, in bits per position (the
    model's normalised distribution at each position, from one teacher-forced call on the
    sample), and its mean intensity (values / (K − 1), averaged over positions)."""
    out = to_numpy(model(x)).astype(np.float64)
    out = out - out.max(-1, keepdims=True)
    log_p = out - np.log(np.exp(out).sum(-1, keepdims=True))
    xs = to_numpy(x).astype(np.int64)
    chosen = np.take_along_axis(log_p, xs[..., None], -1)[..., 0]
    return {"bits_per_dim": -chosen.sum(-1) / (model.length * math.log(2.0)),
            "mean_intensity": xs.mean(-1) / (model.num_classes - 1)}


def distribution_check(stats: Mapping[str, Mapping[str, np.ndarray]], reference: str,
                       methods: Sequence[str], alpha: float) -> dict[str, dict]:
    """Two-sample Kolmogorov–Smirnov tests (``scipy.stats.ks_2samp``) of each method's
    per-sample statistics against ``reference``'s, Bonferroni over all of them: a test fails
    when its p-value is below ``alpha`` / (tests), so the chance that any test of a correct
    sampler fails is at most ``alpha``. Returns, per method, each statistic's test and whether
    every test passed."""
    from scipy.stats import ks_2samp

    tests = len(methods) * len(STATISTICS)
    threshold = alpha / max(tests, 1)
    out = {}
    for method in methods:
        per = {}
        for name in STATISTICS:
            a, b = np.asarray(stats[method][name]), np.asarray(stats[reference][name])
            result = ks_2samp(a, b)
            per[name] = {"statistic": float(result.statistic), "p_value": float(result.pvalue),
                         "mean": float(a.mean()), "reference_mean": float(b.mean()),
                         "passed": bool(result.pvalue >= threshold)}
        out[method] = {"test": "two-sample Kolmogorov-Smirnov (scipy.stats.ks_2samp), per statistic",
                       "reference": reference, "alpha_familywise": float(alpha), "tests": tests,
                       "threshold": threshold, "samples": len(np.asarray(stats[method][STATISTICS[0]])),
                       "reference_samples": len(np.asarray(stats[reference][STATISTICS[0]])),
                       "statistics": per, "passed": all(t["passed"] for t in per.values())}
    return out


def step_summary(res) -> dict:
    """Steps per sample (mean, spread), positions fixed per step, work, of one sampling run."""
    steps = np.asarray(res.steps, dtype=np.float64)
    accepted = np.asarray(res.accepted)
    return {"guarantee": res.guarantee, "rows": int(len(steps)),
            "steps_mean": float(steps.mean()), "steps_std": float(steps.std()),
            "steps_min": int(steps.min()), "steps_max": int(steps.max()),
            "steps_median": float(np.median(steps)),
            "step_reduction": float(res.sequence_length / steps.mean()),
            "accepted_per_step": float(res.mean_accepted),
            # the share of a row's steps that fixed one position only (SJD-PAC reports about
            # half of SJD's passes so)
            "single_position_step_share": float((accepted == 1).sum() / max((accepted > 0).sum(), 1)),
            "model_calls": int(res.model_calls),
            "network_evaluations": float(res.network_evaluations),
            "window": res.window, "causality_violation": int(res.causality_violation)}
