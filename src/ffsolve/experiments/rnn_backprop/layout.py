"""What the workflow knows of rnn_backprop without importing torch: its blocked methods, the keys
each job reads, its run names and its figures (workflow/rules/common.smk and the jobs read the same
lists)."""

from ffsolve.kit import run_names

BLOCKED = ("gs_jacobi", "jacobi_gs", "sliding_jacobi")  # one run per block size
BUDGETED = ("jacobi",)  # one run per budget (jacobi_k<budget>), and one to the end
TRAIN_KEYS = ()  # no train job: training is what its measure job times, every run from the same weights
FIGURE_RUNS = "all"


def configured_runs(methods, block_sizes, budgets) -> list[str]:
    """The run names of a config section (the folders under results/rnn_backprop/<dataset>/)."""
    return run_names(methods, block_sizes, budgets, blocked=BLOCKED, budgeted=BUDGETED)


def runs(section) -> list[str]:
    return configured_runs(section["methods"], section["block_sizes"], section["jacobi_budgets"])


def figures(section) -> list[str]:
    return [f"figures/rnn_backprop_{dataset}{suffix}.{ext}" for dataset in section["datasets"]
            for suffix in ("", "_iter", "_convergence") for ext in ("png", "pdf")]
