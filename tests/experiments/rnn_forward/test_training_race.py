"""Training through the solvers (rnn_forward.training_race): the parallel variants train like
the loop (loss curves within the declared tolerance, exact states bit for bit), a wrong backward
fails that tolerance, and the benchmark script runs end to end."""

import json

import pytest
import torch

from ffsolve.data import load_dataset
from ffsolve.experiments.rnn_forward import training_race as tr
from ffsolve.experiments.rnn_forward.cases import pixel_sequences
from ffsolve.experiments.rnn_forward.model import NextPixelGRU
from ffsolve.recurrence import grad as recurrence_grad

SMALL = tr.RaceSettings(steps=6, batch=2, hidden_size=8, test_images=4, pilot_repeats=1)
VARIANTS = [tr.Variant("loop", "sequential", "loop"),
            tr.Variant("nn_gru", "native", "autograd"),
            tr.Variant("jacobi_jacobi", "jacobi", "jacobi"),
            tr.Variant("newton_scan", "newton", "scan")]


@pytest.fixture(scope="module")
def mnist(repo_root):
    return load_dataset("mnist", "embedded", embedded_dir=repo_root / "workflow" / "resources" / "mnist")


def test_exact_parallel_training_follows_the_loop_within_the_declared_tolerance(mnist):
    record = tr.race(mnist.train_images[:64], mnist.test_images, SMALL, variants=VARIANTS)
    by_name = {v["name"]: v for v in record["variants"]}
    for name in by_name:
        assert by_name[name]["within_curve_tolerance"], (name, by_name[name]["max_curve_gap_to_loop"])
        assert len(by_name[name]["losses_bits_per_pixel"]) == SMALL.steps
    # Parallel forward steps never exceed T.
    assert all(i <= 784 for i in by_name["jacobi_jacobi"]["forward_iterations"])
    # The first step starts from the same weights and batch: the loss is the same number.
    first = {v["losses_bits_per_pixel"][0] for v in record["variants"]}
    assert max(first) - min(first) <= 1e-6


def test_a_backward_that_stops_at_one_time_step_fails_the_curve_tolerance(mnist, monkeypatch):
    truncated = tr.Variant("truncated", "jacobi", "jacobi")

    real = recurrence_grad.adjoint

    def one_step(backward, g, **kw):
        return g.clone() if backward == "jacobi" else real(backward, g, **kw)

    monkeypatch.setattr(recurrence_grad, "adjoint", one_step)
    record = tr.race(mnist.train_images[:64], mnist.test_images, SMALL,
                     variants=[VARIANTS[0], truncated])
    wrong = record["variants"][1]
    assert not wrong["within_curve_tolerance"], wrong["max_curve_gap_to_loop"]


def test_tol0_parallel_states_are_the_loops_bit_for_bit(mnist):
    torch.manual_seed(0)
    model = NextPixelGRU(8)
    u, _ = (torch.from_numpy(a) for a in pixel_sequences(mnist.train_images[:3]))
    loop, _ = tr.states(model, tr.Variant("loop", "sequential", "loop"), u)
    for method in ("jacobi", "newton"):
        parallel, result = tr.states(model, tr.Variant(method, method, "jacobi"), u)
        assert torch.equal(parallel, loop), method
        assert result.iterations <= u.shape[0]


def test_the_benchmark_script_pilots_races_and_writes_its_table(repo_root, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "train_through_solvers", repo_root / "benchmarks" / "train_through_solvers.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    record = script.main(["--source", "embedded", "--quick", "--hidden-size", "4",
                          "--out", str(tmp_path)])
    chosen = record["pilot"]["chosen"]
    assert record["pilot"]["medians_s"][chosen] == min(
        m for m in record["pilot"]["medians_s"].values() if m is not None)
    names = [v["name"] for v in record["variants"]]
    assert names == ["nn_gru", "loop", "parallel", "parallel_tol"]
    assert json.loads((tmp_path / "record.json").read_text())["variants"][2]["forward"] == chosen.split("+")[0]
    table = (tmp_path / "table.md").read_text()
    assert all(f"| {name} |" in table for name in names)
    assert (tmp_path / "loss_vs_time.png").stat().st_size > 10_000


def test_solve_recurrence_gradients_reach_the_gru_weights(mnist):
    """The race's parallel variants train the GRU's own weights (Cell.parameters are nn.GRU's)."""
    torch.manual_seed(1)
    model = NextPixelGRU(4)
    u, x = (torch.from_numpy(a) for a in pixel_sequences(mnist.train_images[:2]))
    tr.loss_and_gradients(model, tr.Variant("p", "jacobi", "scan"), u, x)
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
