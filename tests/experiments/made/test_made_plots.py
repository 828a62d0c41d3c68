"""The MADE figure helpers on hand-made runs (the notebook itself runs in the end-to-end test)."""

import numpy as np

from ffsolve.experiments.made import plots as made_plots
from ffsolve.kit import save

LAM = 1e-6


def fake_run(name, iterations, shape=(1, 4, 4), keep=2, every=2):
    dims = int(np.prod(shape))
    steps = [k for k in range(0, 3 * every, every) if k < iterations] + [iterations]
    snapshots = np.stack([np.full((keep, dims), float(k)) for k in steps])
    return {
        "experiment": "made", "dataset": "mnist", "run": name, "method": name.split("_b")[0],
        "block_size": None, "iterations": iterations, "sequence_length": dims,
        "network_evaluations": float(iterations), "converged": True, "bitwise_equal": True,
        "within_tolerance": None, "wall_time_s": 0.01 * iterations,
        "timing": {"iqr_s": 0.001, "session": "s1"},
        "trace": {
            "error_mean": np.linspace(1, 0, iterations + 1), "error_std": np.zeros(iterations + 1),
            "change_mean": np.linspace(1, 0, iterations), "change_std": np.zeros(iterations),
            "snapshot_iterations": np.asarray(steps), "snapshots": snapshots,
            "image_shape": np.asarray(shape), "logit_lambda": np.asarray(LAM),
        },
    }


def test_to_images_undoes_the_channel_major_flattening():
    logits = np.full((2, 3 * 2 * 2), -20.0)
    logits[:, 4:8] = 20.0  # green plane saturated
    images = made_plots.to_images(logits, (3, 2, 2), LAM)
    assert images.shape == (2, 2, 2, 3)
    assert np.all(images[..., 1] == 1) and np.all(images[..., 0] == 0)


def test_mosaic_shows_the_final_sample_after_convergence():
    run = fake_run("jacobi", iterations=3)  # snapshots at 0, 2 and the final 3
    mosaic = made_plots.snapshot_mosaic(run, columns=[0, 2, 4])
    assert mosaic.shape == (2 * 5 - 1, 4 * 5 - 1)
    tile = lambda c: mosaic[0:4, c * 5: c * 5 + 4]  # noqa: E731
    np.testing.assert_array_equal(tile(2), tile(3))  # iteration 4 > 3 shows the final sample
    assert not np.array_equal(tile(0), tile(3))


def test_figures_and_table_build():
    runs = [fake_run("sequential", 16), fake_run("jacobi", 4)]
    save(made_plots.convergence_figure(runs, "t"))
    save(made_plots.sample_grid_figure(runs, "t"))
    training = {"hidden_sizes": [8], "steps": 3, "dataset": "mnist", "data_source": "embedded",
                "final_train_bpd": 5.0, "final_test_bpd": 5.25}
    table = made_plots.markdown_table(runs, training)
    # 0.16 s / 0.04 s, both timed in one session: a speedup of 4.
    assert "| jacobi | 4 / 16 | 4 | 0.04 ± 0.001 | 4.00 |" in table
    assert "| yes |" in table and "test 5.250 bits/dim" in table


def test_no_speedup_across_sessions():
    sequential, jacobi = fake_run("sequential", 16), fake_run("jacobi", 4)
    jacobi["timing"] = {**jacobi["timing"], "session": "another process"}
    row = next(line for line in made_plots.markdown_table([sequential, jacobi]).splitlines()
               if line.startswith("| jacobi"))
    assert row.split("|")[5].strip() == ""  # the × sequential column stays empty


def test_cached_sequential_is_drawn_by_its_work_and_is_the_second_baseline():
    sequential, jacobi = fake_run("sequential", 16), fake_run("jacobi", 4)
    cached = fake_run("sequential_cache", 16)
    cached["within_tolerance"], cached["bitwise_equal"] = True, False
    cached["wall_time_s"] = 0.08
    # Steps of rising cost: 0.1, 0.2, ... of a pass (the trace's work before each step).
    cached["trace"]["cumulative_network_evaluations"] = np.concatenate([[0.0], np.cumsum(np.arange(1, 17) / 10)])
    fig = made_plots.convergence_figure([sequential, cached, jacobi], "t")
    by_time = fig.axes[1]
    error = next(line for line in by_time.get_lines() if line.get_label() == "sequential_cache: error")
    x = error.get_xdata()
    work = cached["trace"]["cumulative_network_evaluations"]
    np.testing.assert_allclose(x, work / work[-1] * 0.08)
    assert x[-1] == 0.08 and x[1] < 0.08 / 16  # the first step is the cheapest, not 1/16 of the time
    table = made_plots.markdown_table([sequential, cached, jacobi])
    row = next(line for line in table.splitlines() if line.startswith("| jacobi")).split("|")
    # 0.16 s sequential, 0.08 s cached, 0.04 s Jacobi, one session: 4x and 2x.
    assert row[5].strip() == "4.00" and row[6].strip() == "2.00"
