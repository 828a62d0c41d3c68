"""Run plumbing shared by every experiment: seeds, devices, threads, timing, results, jobs."""

import logging
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ffsolve import runtime, timing
from ffsolve.workflow.jobs import run_snakemake_job


def test_seed_everything_makes_torch_and_numpy_repeat():
    runtime.seed_everything(7)
    first = (np.random.rand(3), torch.rand(3))
    runtime.seed_everything(7)
    second = (np.random.rand(3), torch.rand(3))
    np.testing.assert_array_equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


@pytest.mark.parametrize("bad", [1.5, "7", True])
def test_seed_must_be_an_integer(bad):
    with pytest.raises(ValueError, match="seed"):
        runtime.seed_everything(bad)


def test_device_choice():
    assert runtime.torch_device("cpu").type == "cpu"
    assert runtime.torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        runtime.torch_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_an_error_not_a_fallback():
    with pytest.raises(RuntimeError, match="device: cuda"):
        runtime.torch_device("cuda")
    with pytest.raises(RuntimeError, match="device: cuda"):
        runtime.jax_device("cuda")


@pytest.fixture
def thread_state(monkeypatch):
    """No thread settings in the environment; torch's and every BLAS/OpenMP pool's counts put back."""
    from threadpoolctl import threadpool_info, threadpool_limits

    for var in (*runtime.THREAD_VARIABLES, "XLA_FLAGS"):
        monkeypatch.setenv(var, "")
    torch_before = torch.get_num_threads()
    pools = {pool["prefix"]: pool["num_threads"] for pool in threadpool_info()}
    yield
    torch.set_num_threads(torch_before)
    threadpool_limits(pools)


def test_limit_threads_sets_every_pool_and_reports_the_count_in_force(thread_state):
    # JAX's CPU backend sizes its intra-op pool from NPROC (else every core of the machine), so a
    # job that holds fewer cores than the machine has must set it for the record to be true.
    assert runtime.limit_threads(2) == 2 == torch.get_num_threads() == runtime.threads_in_use()
    assert all(os.environ[var] == "2" for var in runtime.THREAD_VARIABLES)
    assert "--xla_cpu_multi_thread_eigen=true" in os.environ["XLA_FLAGS"]


def test_limit_threads_sets_torch_and_refuses_nonsense(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert runtime.limit_threads(1) == 1
        assert torch.get_num_threads() == 1
        # NumPy's BLAS was loaded before the call; it must be limited too.
        from threadpoolctl import threadpool_info

        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        runtime.limit_threads(0)


def test_time_call_excludes_warmup_and_reports_median():
    calls = []
    result = timing.time_call(lambda: calls.append(1), repeats=5, warmup=2, sync=None)
    assert len(calls) == 7
    assert result.repeats == 5 and result.warmup == 2 and len(result.times_s) == 5
    assert result.min_s <= result.median_s <= result.max_s
    assert result.median_s == pytest.approx(sorted(result.times_s)[2])
    with pytest.raises(ValueError, match="repeats"):
        timing.time_call(lambda: None, repeats=0)


def test_time_call_synchronises_each_result():
    seen = []
    timing.time_call(lambda: "value", repeats=3, warmup=1, sync=seen.append)
    assert seen == ["value"] * 4


def fake_snakemake(tmp_path, threads=1):
    return SimpleNamespace(
        log=[str(tmp_path / "logs" / "job.log")], threads=threads, input=[], output=[],
        params={}, config={"seed": 1}, wildcards=SimpleNamespace(items=lambda: []), rule="demo",
    )


def test_job_logs_into_the_rule_log(tmp_path):
    smk = fake_snakemake(tmp_path)
    value = run_snakemake_job(smk, lambda job: logging.getLogger("ffsolve.x").info("hello %d", job.threads) or 3)
    assert value == 3
    text = (tmp_path / "logs" / "job.log").read_text()
    assert "hello 1" in text and "finished" in text


def test_job_failure_is_logged_and_raised(tmp_path):
    smk = fake_snakemake(tmp_path)

    def broken(job):
        raise KeyError("missing thing")

    with pytest.raises(KeyError):
        run_snakemake_job(smk, broken)
    text = (tmp_path / "logs" / "job.log").read_text()
    assert "failed" in text and "missing thing" in text and "Traceback" in text


def test_a_job_sees_params_but_never_the_config(tmp_path):
    # What a job reads must be what Snakemake tracks (params), so the config is not handed over.
    smk = fake_snakemake(tmp_path)
    assert run_snakemake_job(smk, lambda job: hasattr(job, "config")) is False


def test_timed_jobs_compute_on_the_threads_the_timing_settings_name(tmp_path):
    from ffsolve.workflow.jobs import compute_threads

    def smk(threads, timing):
        return SimpleNamespace(threads=threads, params=SimpleNamespace(timing=timing))

    assert compute_threads(smk(2, {"repeats": 5, "threads": 1})) == 1   # holds 2 cores, computes on 1
    assert compute_threads(smk(2, {"repeats": 5, "threads": None})) == 2  # null: every core held
    assert compute_threads(smk(2, {"threads": 8})) == 2                  # never more than it holds
    assert compute_threads(SimpleNamespace(threads=3, params=SimpleNamespace())) == 3


def test_a_timed_job_with_threads_null_computes_on_every_core_it_holds(tmp_path, thread_state):
    # timing.threads: null resolves to the cores the job holds, and job.threads (what the records
    # state) is the count in force, not the setting.
    smk = fake_snakemake(tmp_path, threads=2)
    smk.params = SimpleNamespace(timing={"repeats": 3, "threads": None})
    seen = run_snakemake_job(smk, lambda job: (job.threads, torch.get_num_threads(), os.environ["NPROC"]))
    assert seen == (2, 2, "2")
