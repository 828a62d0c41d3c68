"""What the workflow knows of densenet without importing torch: its blocked methods, the keys
each job reads, its run names and its figures (workflow/rules/common.smk and the jobs read the same
lists)."""

from ffsolve.kit import run_names

BLOCKED = ("gs_jacobi",)  # runs once per block size
TRAIN_KEYS = ("model", "train")  # densenet_train passes them as params model and train
FIGURE_RUNS = "all"


def runs(section) -> list[str]:
    return run_names(section["methods"], section["block_sizes"], blocked=BLOCKED)


def figures(section) -> list[str]:
    return [f"figures/densenet_{dataset}.{ext}" for dataset in section["datasets"]
            for ext in ("png", "pdf")]
