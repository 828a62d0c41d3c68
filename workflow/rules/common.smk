# The one place that reads the config: validation, derived settings and target lists.
import sys

from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")

# Importing ffsolve here only for pure helpers (names of runs); jobs import it themselves.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from ffsolve.experiments.runs import run_names  # noqa: E402

ENVS = {name: f"../../envs/{name}.yaml" for name in ("torch", "jax", "notebook")}
THREADS = config["threads"]
# A job that can use a GPU asks for one; on a machine without GPUs the resource is simply unused.
GPU = 1 if config["device"] != "cpu" else 0


def experiment_active(name):
    return config[name]["activate"]


def get_solver_demo_runs():
    cfg = config["solver_demo"]
    return run_names(cfg["methods"], cfg["block_sizes"])


def get_solver_demo_results(kind):
    return expand(
        "results/solver_demo/tanh_map/{run}/{kind}",
        run=get_solver_demo_runs(),
        kind=kind,
    )


def get_all_metrics():
    """Every metrics.json the current config asks for (the input of results/summary.csv)."""
    metrics = []
    if experiment_active("solver_demo"):
        metrics += get_solver_demo_results("metrics.json")
    return metrics


def get_figures():
    figures = ["results/summary.csv"]
    if experiment_active("solver_demo"):
        figures += expand("figures/solver_demo.{ext}", ext=("png", "pdf"))
    return figures


def get_all_outputs():
    return get_figures() + get_all_metrics()
