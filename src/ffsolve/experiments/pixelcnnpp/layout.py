"""What the workflow knows of pixelcnnpp without importing JAX: its blocked methods, the keys
each job reads, its run names and its figures (workflow/rules/common.smk and the jobs read the same
lists)."""

from ffsolve.kit import run_names

# Each runs once per block size (in positions).
BLOCKED = ("gs_jacobi", "jacobi_gs", "sliding_jacobi", "gs_jacobi_cache", "jacobi_gs_cache",
           "jacobi_gs_band_cache")
# What pixelcnnpp_train reads of a dataset's settings (its params: a change there, and only there,
# retrains; a new sampling method does not).
TRAIN_KEYS = ("nr_resnet", "nr_filters", "nr_logistic_mix", "train")
FIGURE_RUNS = "exact"  # the frontier runs are drawn by figures/frontier.png


def runs(section) -> list[str]:
    return run_names(section["methods"], section["block_sizes"], blocked=BLOCKED,
                     tols=section["frontier_tols"])


def figures(section) -> list[str]:
    return [f"figures/pixelcnnpp_{dataset}{part}.{ext}" for dataset in section["datasets"]
            for part in ("", "_samples") for ext in ("png", "pdf")]
