"""What the workflow knows of rnn_forward without importing torch: its blocked methods, the keys
each job reads, its run names and its figures (workflow/rules/common.smk and the jobs read the same
lists)."""

from ffsolve.kit import run_names

TRAIN_KEYS = ("hidden_size", "train")
MEASURE_KEYS = ("hidden_size", "methods", "frontier_tols", "batch", "input_size", "softplus_radius",
                "damping")
FIGURE_RUNS = "all"  # the figure draws the frontier runs too (figures/rnn_forward_frontier)


def runs(section) -> list[str]:
    """Every method exactly, and each parallel method again at each frontier tolerance > 0."""
    return run_names(section["methods"], tols=section["frontier_tols"])


def figures(section) -> list[str]:
    return [f"figures/rnn_forward{part}.{ext}" for part in ("", "_frontier") for ext in ("png", "pdf")]
