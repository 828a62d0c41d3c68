"""What the workflow knows of solver_demo without importing its map: its blocked methods, the keys
each job reads, its run names and its figures (workflow/rules/common.smk and the jobs read the same
lists)."""

from ffsolve.kit import run_names

BLOCKED = ("gs_jacobi", "jacobi_gs", "sliding_jacobi")  # each runs once per block size
TRAIN_KEYS = ()  # trains nothing: a random map
FIGURE_RUNS = "all"  # it has no frontier runs


def runs(section) -> list[str]:
    return run_names(section["methods"], section["block_sizes"], blocked=BLOCKED)


def figures(section) -> list[str]:
    return [f"figures/solver_demo.{ext}" for ext in ("png", "pdf")]
