"""What the workflow knows of made without importing torch: its blocked methods, the keys
each job reads, its run names and its figures (workflow/rules/common.smk and the jobs read the same
lists)."""

from ffsolve.kit import run_names

BLOCKED = ("gs_jacobi", "jacobi_gs", "sliding_jacobi")  # each runs once per block size
TRAIN_KEYS = ("hidden_sizes", "logit_lambda", "train")
MEASURE_KEYS = ("hidden_sizes", "logit_lambda", "methods", "block_sizes", "sample", "frontier_tols")
FIGURE_RUNS = "exact"  # the frontier runs are drawn by figures/frontier.png


def runs(section) -> list[str]:
    return run_names(section["methods"], section["block_sizes"], blocked=BLOCKED,
                     tols=section["frontier_tols"])


def figures(section) -> list[str]:
    return [f"figures/made_{dataset}{part}.{ext}" for dataset in section["datasets"]
            for part in ("", "_samples") for ext in ("png", "pdf")]
