"""What the workflow knows of speculative without importing torch or JAX: the models it samples
(each a checkpoint another experiment's train rule writes), the keys its job reads, its run names
and its figures (workflow/rules/common.smk and the job read the same lists)."""

from ffsolve.kit import run_names

BLOCKED = ()  # no blocked methods
TRAIN_KEYS = ()  # trains nothing: it samples the checkpoints of SOURCES
MEASURE_KEYS = ("methods", "samples", "sequential_rows", "window", "repeats", "alpha")
FIGURE_RUNS = "all"

# dataset -> (the experiment whose model it samples, that experiment's dataset, the checkpoint's
# file name under results/<experiment>/<dataset>/). The source experiment's package offers
# `autoregressive.load(checkpoint, device=...)`: the model as every position's distribution.
SOURCES = {
    "rnn_forward_mnist": ("rnn_forward", "mnist", "model.pt"),
    "pixelcnnpp_mnist": ("pixelcnnpp", "mnist", "model.msgpack"),
}


def source_of(dataset: str) -> tuple[str, str, str]:
    if dataset not in SOURCES:
        raise ValueError(f"speculative: unknown dataset {dataset!r}; expected one of {sorted(SOURCES)}")
    return SOURCES[dataset]


def runs(section) -> list[str]:
    """One run per method (no block sizes, no tolerances: every method stops when all positions
    are fixed)."""
    return run_names(section["methods"])


def figures(section) -> list[str]:
    return [f"figures/speculative.{ext}" for ext in ("png", "pdf")]
