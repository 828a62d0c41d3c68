# The one place that reads the config: typed overrides, validation, the per-dataset layout,
# thread and GPU requests, and the target lists each experiment's .smk extends with
# register_targets(). Jobs receive what they read through params; the library reads no config.
import shutil
import sys

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# Pure helpers come from the library (src/ on the path: the Snakefile runs before any install).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from ffsolve.experiments.made import BLOCKED as MADE_BLOCKED  # noqa: E402 (torch-free)
from ffsolve.experiments.pixelcnnpp import TRAIN_KEYS as PIXELCNNPP_TRAIN_KEYS  # noqa: E402 (JAX-free)
from ffsolve.experiments.solver_demo import BLOCKED as SOLVER_DEMO_BLOCKED  # noqa: E402
from ffsolve.kit.runs import exact_run_names, run_names  # noqa: E402
from ffsolve.workflow_config import (  # noqa: E402
    LAYOUT_KEYS,
    canonical,
    coerce_to_schema,
    dataset_settings,
    override_schema,
)

SECTIONS = ("data", "solver_demo", "made", "pixelcnnpp", "densenet", "rnn_backprop", "rnn_forward")
SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"


def _load_schema(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def _coerce(value, schema_path):
    """Nested --config values arrive as strings; read them by the schema's types first."""
    return coerce_to_schema(value, _load_schema(schema_path))


_top = _coerce(dict(config), SCHEMAS / "config.schema.yaml")
config.clear()
config.update(_top)
validate(config, schema="../schemas/config.schema.yaml")


def validate_section(name):
    """Check config[name] against workflow/schemas/<name>.schema.yaml and each
    per_dataset.<dataset> override against the same settings. The schemas hold no defaults: every
    key comes from config/config.yaml, with the --configfile and --config values merged over it."""
    schema_path = SCHEMAS / f"{name}.schema.yaml"
    if not schema_path.exists():
        if config[name]:
            raise WorkflowError(
                f"config key '{name}': this experiment is not part of the workflow yet, "
                "so its settings would be ignored; remove the key"
            )
        return
    schema = _load_schema(schema_path)
    config[name] = coerce_to_schema(config[name], schema)
    try:
        validate(config[name], schema=str(schema_path))
    except WorkflowError as err:
        raise WorkflowError(f"config key '{name}' is invalid:\n{err}") from None
    overrides = config[name].get("per_dataset") or {}
    if overrides:
        per_dataset = override_schema(schema)
        for dataset, settings in overrides.items():
            overrides[dataset] = coerce_to_schema(settings or {}, per_dataset)
            error = jsonschema.exceptions.best_match(
                jsonschema.Draft202012Validator(per_dataset).iter_errors(overrides[dataset])
            )
            if error is not None:
                key = ".".join([name, "per_dataset", dataset, *map(str, error.absolute_path)])
                raise WorkflowError(f"config key '{key}' is invalid: {error.message}")


for _section in SECTIONS:
    validate_section(_section)

_ordered = canonical(dict(config))
config.clear()
config.update(_ordered)

ENVS = {name: f"../../envs/{name}.yaml" for name in ("torch", "jax", "notebook")}
# Untimed compute jobs (data, training, notebooks) take config threads each, so several run side
# by side. Timed jobs (the harness: every method of one experiment and dataset in one process)
# ask for every core Snakemake was given, so no neighbour job skews their clocks.
THREADS = config["threads"]
_cores = workflow.cores if isinstance(workflow.cores, int) and 0 < workflow.cores < 4096 else None
TIMED_THREADS = max(THREADS, _cores or THREADS)
# A GPU is asked for only where one will be used: device cuda, or auto on a machine that has one.
# Jobs on a CPU-only machine then never queue behind a `gpu` resource they do not use.
GPU = int(config["device"] == "cuda" or (config["device"] == "auto" and shutil.which("nvidia-smi") is not None))

TARGETS = {"metrics": [], "figures": []}


def register_targets(metrics=(), figures=()):
    """Called by each experiment's .smk: its metrics feed results/summary.csv, its figures `figures`."""
    TARGETS["metrics"].extend(metrics)
    TARGETS["figures"].extend(figures)


def experiment_active(name):
    return config[name].get("activate", False)


def settings_for(experiment, dataset):
    """What one dataset's jobs of `experiment` read: shared settings with per_dataset merged in."""
    return dataset_settings(config[experiment], dataset)


def get_embedded_data_files(wildcards):
    """The shipped MNIST files, as inputs, when the embedded source is used (so edits rerun)."""
    if wildcards.dataset == "mnist" and config["data"]["mnist"]["source"] == "embedded":
        return expand(
            "workflow/resources/mnist/{name}.gz",
            name=("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        )
    return []


def get_results(experiment, datasets, runs, kind):
    """results/<experiment>/<dataset>/<run>/<kind> for every dataset and run (DESIGN.md §6)."""
    return expand(
        "results/{experiment}/{dataset}/{run}/{kind}",
        experiment=experiment,
        dataset=datasets,
        run=runs,
        kind=kind,
    )


def autotune_file(experiment):
    """The decisions file of one measure job's `auto` runs (ffsolve.kit.auto), as a params
    function: one file per experiment and dataset, so parallel jobs never write the same file.
    Not an output (Snakemake would delete it before the job): a rerun reads it, and a decision
    kept there for the same key (shapes, dtype, device, tolerance, threads, candidates, version)
    pilots nothing; timing.auto_replay pilots nothing at all. Delete it to pilot again."""
    return lambda wildcards: f"results/autotune/{experiment}/{wildcards.dataset}.json"


def get_all_metrics():
    """Every metrics.json the current config asks for (the input of results/summary.csv)."""
    return list(TARGETS["metrics"])


def get_figures():
    overview = ["results/summary.csv", "figures/speedups.md", "figures/speedups.png"]
    return overview + TARGETS["figures"]


def get_all_outputs():
    return get_figures() + get_all_metrics()


# ---- solver_demo (rules in workflow/rules/solver_demo.smk) -------------------------------------------------
def get_solver_demo_runs():
    cfg = config["solver_demo"]
    return run_names(cfg["methods"], cfg["block_sizes"], blocked=SOLVER_DEMO_BLOCKED)


def get_solver_demo_results(kind):
    return get_results("solver_demo", config["solver_demo"]["datasets"], get_solver_demo_runs(), kind)


# ---- made (rules in workflow/rules/made.smk) --------------------------------------------------------
# The keys of one dataset's made settings each job reads (and reruns when they change).
MADE_TRAIN_KEYS = ("hidden_sizes", "logit_lambda", "train")
MADE_MEASURE_KEYS = ("hidden_sizes", "logit_lambda", "methods", "block_sizes", "sample", "frontier_tols")


def get_made_runs():
    cfg = config["made"]
    return run_names(cfg["methods"], cfg["block_sizes"], blocked=MADE_BLOCKED, tols=cfg["frontier_tols"])


def get_made_figure_results(datasets, kind):
    """The runs MADE's figure draws: all but the frontier runs (figures/frontier.png draws those)."""
    return get_results("made", datasets, exact_run_names(get_made_runs()), kind)


def get_made_results(datasets, kind):
    """results/made/<dataset>/<run>/<kind> for every sampling run of the config."""
    return get_results("made", datasets, get_made_runs(), kind)


def made_settings(dataset, keys):
    settings = settings_for("made", dataset)
    return {key: settings[key] for key in keys}


def get_made_checkpoint(wildcards):
    """The checkpoint to sample: the one the config names, else the one made_train writes."""
    named = settings_for("made", wildcards.dataset)["checkpoint"]
    return named if named else f"results/made/{wildcards.dataset}/model.pt"


def get_made_training(wildcards):
    """The learning curve of the trained model ([] when the config names a checkpoint)."""
    if settings_for("made", wildcards.dataset)["checkpoint"]:
        return []
    return f"results/made/{wildcards.dataset}/train.json"


# ---- rnn_backprop (rules in workflow/rules/rnn_backprop.smk) ------------------------------------------------
from ffsolve.experiments.rnn_backprop import configured_runs  # noqa: E402 (torch-free)


def get_rnn_backprop_runs():
    cfg = config["rnn_backprop"]
    return configured_runs(cfg["methods"], cfg["block_sizes"], cfg["jacobi_budgets"])


def get_rnn_backprop_results(kind):
    """results/rnn_backprop/<dataset>/<run>/<kind> for every dataset and run of the config."""
    return get_results("rnn_backprop", config["rnn_backprop"]["datasets"], get_rnn_backprop_runs(), kind)


def get_rnn_backprop_figures():
    return expand(
        "figures/rnn_backprop_{dataset}{suffix}.{ext}",
        dataset=config["rnn_backprop"]["datasets"],
        suffix=("", "_iter", "_convergence"),
        ext=("png", "pdf"),
    )


# ---- densenet (rules in workflow/rules/densenet.smk) ----------------------------------------------------
def get_densenet_runs():
    cfg = config["densenet"]
    return run_names(cfg["methods"], cfg["block_sizes"], blocked=("gs_jacobi",))


def get_densenet_results(datasets, kind):
    """results/densenet/<dataset>/<run>/<kind> for every run of the config."""
    return get_results("densenet", datasets, get_densenet_runs(), kind)


def get_densenet_inputs(wildcards):
    """Named inputs of densenet_measure: what the dataset's model and images are read from.

    mnist: the trained checkpoint and the prepared data; imagenet_val: the local weights file when
    the config names one (the image folder is checked here so a missing one stops the DAG with the
    key to set); random_speed_only: nothing (weights and inputs come from the seed).
    """
    if wildcards.dataset == "mnist":
        return {"model": "results/densenet/mnist/model.pt", "data": "resources/data/mnist.npz"}
    if wildcards.dataset == "imagenet_val":
        folder = config["data"]["imagenet_val"]["folder"]
        if not folder or not Path(folder).is_dir():
            raise WorkflowError(
                f"densenet.datasets includes imagenet_val but data.imagenet_val.folder is "
                f"{folder!r}, not an existing folder: set it to ImageNet validation images in "
                "class sub-folders, or use the random_speed_only dataset on machines without ImageNet"
            )
        weights = settings_for("densenet", "imagenet_val")["weights_file"]
        return {"weights": weights} if weights else {}
    return {}


def get_densenet_figures():
    return expand(
        "figures/densenet_{dataset}.{ext}", dataset=config["densenet"]["datasets"], ext=("png", "pdf")
    )


# ---- pixelcnnpp (rules in workflow/rules/pixelcnnpp.smk) --------------------------------------------------
def get_pixelcnnpp_runs():
    """Run names: the block methods once per block size (positions), the others once."""
    cfg = config["pixelcnnpp"]
    return run_names(
        cfg["methods"], cfg["block_sizes"],
        blocked=("gs_jacobi", "jacobi_gs", "gs_jacobi_cache", "jacobi_gs_cache", "jacobi_gs_band_cache"),
        tols=cfg["frontier_tols"],
    )


def get_pixelcnnpp_figure_results(datasets, kind):
    """The runs PixelCNN++'s figure draws: all but the frontier runs (figures/frontier.png)."""
    return get_results("pixelcnnpp", datasets, exact_run_names(get_pixelcnnpp_runs()), kind)


def get_pixelcnnpp_results(datasets, kind):
    """results/pixelcnnpp/<dataset>/<run>/<kind> for every configured run."""
    return get_results("pixelcnnpp", datasets, get_pixelcnnpp_runs(), kind)


def get_pixelcnnpp_checkpoint(wildcards):
    """The checkpoint to sample: the one the config names, else the one pixelcnnpp_train writes."""
    named = settings_for("pixelcnnpp", wildcards.dataset)["checkpoint"]
    return named if named else f"results/pixelcnnpp/{wildcards.dataset}/model.msgpack"


def get_pixelcnnpp_training(wildcards):
    """The training record ([] when the config names a checkpoint)."""
    if settings_for("pixelcnnpp", wildcards.dataset)["checkpoint"]:
        return []
    return f"results/pixelcnnpp/{wildcards.dataset}/train.json"


def get_pixelcnnpp_figures():
    return expand(
        "figures/pixelcnnpp_{dataset}{part}.{ext}",
        dataset=config["pixelcnnpp"]["datasets"],
        part=("", "_samples"),
        ext=("png", "pdf"),
    )


# ---- rnn_forward (rules in workflow/rules/rnn_forward.smk) ------------------------------------------------
from ffsolve.experiments.rnn_forward import run_names as rnn_forward_run_names  # noqa: E402

# The keys of one case's rnn_forward settings each job reads (and reruns when they change).
RNN_FORWARD_TRAIN_KEYS = ("hidden_size", "train")
RNN_FORWARD_MEASURE_KEYS = (
    "hidden_size", "methods", "frontier_tols", "batch", "input_size", "softplus_radius", "damping",
)


def get_rnn_forward_runs():
    """Every method exactly, and each parallel method again at each frontier tolerance > 0."""
    cfg = config["rnn_forward"]
    return rnn_forward_run_names(cfg["methods"], cfg["frontier_tols"])


def get_rnn_forward_results(datasets, kind):
    """results/rnn_forward/<case>/<run>/<kind> for every case and run of the config."""
    return get_results("rnn_forward", datasets, get_rnn_forward_runs(), kind)


def rnn_forward_settings(dataset, keys):
    settings = settings_for("rnn_forward", dataset)
    return {key: settings[key] for key in keys}


def get_rnn_forward_inputs(wildcards):
    """The trained case reads its checkpoint and the test images; random cases read nothing."""
    if wildcards.dataset == "mnist":
        return {"checkpoint": "results/rnn_forward/mnist/model.pt", "data": "resources/data/mnist.npz"}
    return {}


def get_rnn_forward_training(wildcards):
    """The training record when the mnist case is configured ([] otherwise)."""
    return ["results/rnn_forward/mnist/train.json"] if "mnist" in config["rnn_forward"]["datasets"] else []


def get_rnn_forward_figures():
    return expand("figures/rnn_forward{part}.{ext}", part=("", "_frontier"), ext=("png", "pdf"))
