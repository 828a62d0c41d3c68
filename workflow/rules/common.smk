# The one place that reads the config: validation, derived settings, input functions and the
# target lists that each experiment's .smk extends with register_targets().
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")

SECTIONS = ("data", "solver_demo", "made", "pixelcnnpp", "densenet", "rnn_backprop")
SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"


def validate_section(name):
    """Check config[name] against workflow/schemas/<name>.schema.yaml and fill its defaults."""
    schema = SCHEMAS / f"{name}.schema.yaml"
    if not schema.exists():
        if config[name]:
            raise WorkflowError(
                f"config key '{name}': this experiment is not part of the workflow yet, "
                "so its settings would be ignored; remove the key"
            )
        return
    try:
        validate(config[name], schema=str(schema))
    except WorkflowError as err:
        raise WorkflowError(f"config key '{name}' is invalid:\n{err}") from None


for _section in SECTIONS:
    validate_section(_section)


def _canonical(value):
    """Sorted keys at every level: params built from config sections then compare equal
    whatever order a config file lists its keys in (Snakemake compares params as text)."""
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


_ordered = _canonical(dict(config))
config.clear()
config.update(_ordered)

# Pure helpers (run names) come from the library; jobs import it themselves.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from ffsolve.experiments.runs import run_names  # noqa: E402

ENVS = {name: f"../../envs/{name}.yaml" for name in ("torch", "jax", "notebook")}
THREADS = config["threads"]
# Jobs that can use a GPU ask for one unless the config pins the CPU; a local run without GPUs
# only needs `--resources gpu=0`-free defaults (the resource is unconstrained unless given).
GPU = 0 if config["device"] == "cpu" else 1

TARGETS = {"metrics": [], "figures": []}


def register_targets(metrics=(), figures=()):
    """Called by each experiment's .smk: its metrics feed results/summary.csv, its figures `figures`."""
    TARGETS["metrics"].extend(metrics)
    TARGETS["figures"].extend(figures)


def experiment_active(name):
    return config[name].get("activate", False)


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


def get_solver_demo_results(kind):
    cfg = config["solver_demo"]
    return get_results(
        "solver_demo", "tanh_map", run_names(cfg["methods"], cfg["block_sizes"]), kind
    )


def get_all_metrics():
    """Every metrics.json the current config asks for (the input of results/summary.csv)."""
    return list(TARGETS["metrics"])


def get_figures():
    overview = ["results/summary.csv", "figures/speedups.md", "figures/speedups.png"]
    return overview + TARGETS["figures"]


def get_all_outputs():
    return get_figures() + get_all_metrics()


# ---- made (MADE sampling, workflow/rules/made.smk) ---------------------------------------


def get_made_runs():
    cfg = config["made"]["sample"]
    return run_names(cfg["methods"], cfg["block_sizes"])


def get_made_results(datasets, kind):
    """results/made/<dataset>/<run>/<kind> for every sampling run of the config."""
    return get_results("made", datasets, get_made_runs(), kind)


def get_made_checkpoint(wildcards):
    """The checkpoint to sample: the one the config names, else the one made_train writes."""
    named = config["made"]["checkpoint"][wildcards.dataset]
    return named if named else f"results/made/{wildcards.dataset}/model.pt"


def get_made_training(wildcards):
    """The learning curve of the trained model ([] when the config names a checkpoint)."""
    if config["made"]["checkpoint"][wildcards.dataset]:
        return []
    return f"results/made/{wildcards.dataset}/train.json"


def get_made_figures():
    return expand(
        "figures/made_{dataset}{part}.{ext}",
        dataset=config["made"]["datasets"],
        part=("", "_samples"),
        ext=("png", "pdf"),
    )


# ---- end made ------------------------------------------------------------------------------


# ---- rnn_backprop ---------------------------------------------------------------------------
from ffsolve.experiments.rnn_backprop_runs import run_names as rnn_backprop_run_names  # noqa: E402


def get_rnn_backprop_results(kind):
    """results/rnn_backprop/<dataset>/<run>/<kind> for every backward run the config asks for."""
    cfg = config["rnn_backprop"]
    return get_results("rnn_backprop", cfg["dataset"], rnn_backprop_run_names(cfg), kind)


def get_rnn_backprop_convergence():
    return f"results/rnn_backprop/{config['rnn_backprop']['dataset']}/convergence.npz"


def get_rnn_backprop_figures():
    return expand(
        "figures/rnn_backprop{suffix}.{ext}",
        suffix=("", "_iter", "_convergence"),
        ext=("png", "pdf"),
    )


# ---- end rnn_backprop -----------------------------------------------------------------------


# ---- densenet (DenseNet over layers, workflow/rules/densenet.smk) ----------------------------
def get_densenet_runs():
    cfg = config["densenet"]
    return run_names(cfg["methods"], cfg["block_sizes"])


def get_densenet_results(datasets, kind):
    """results/densenet/<dataset>/<run>/<kind> for every run of the config."""
    return get_results("densenet", datasets, get_densenet_runs(), kind)


def get_densenet_inputs(wildcards):
    """Named inputs of densenet_solve: what the dataset's model and images are read from.

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
        weights = config["densenet"]["imagenet_val"]["weights_file"]
        return {"weights": weights} if weights else {}
    return {}


def get_densenet_figures():
    return expand(
        "figures/densenet_{dataset}.{ext}", dataset=config["densenet"]["datasets"], ext=("png", "pdf")
    )


# ---- end densenet ---------------------------------------------------------------------------


# ---- pixelcnnpp (PixelCNN++ sampling, workflow/rules/pixelcnnpp.smk) ------------------------


def get_pixelcnnpp_results(datasets, kind):
    """results/pixelcnnpp/<dataset>/<method>/<kind>: one folder per configured sampler."""
    return get_results("pixelcnnpp", datasets, config["pixelcnnpp"]["methods"], kind)


def get_pixelcnnpp_settings(wildcards):
    """The dataset's settings; a missing entry is a config error naming the key."""
    try:
        return config["pixelcnnpp"]["settings"][wildcards.dataset]
    except KeyError:
        raise WorkflowError(
            f"config key 'pixelcnnpp.settings.{wildcards.dataset}' is missing: add the "
            "dataset's model and sampling settings (workflow/schemas/pixelcnnpp.schema.yaml)"
        ) from None


def get_pixelcnnpp_checkpoint(wildcards):
    """The checkpoint to sample: the one the config names, else the one pixelcnnpp_train writes."""
    named = get_pixelcnnpp_settings(wildcards)["checkpoint"]
    return named if named else f"results/pixelcnnpp/{wildcards.dataset}/model.msgpack"


def get_pixelcnnpp_training(wildcards):
    """The training record ([] when the config names a checkpoint)."""
    if get_pixelcnnpp_settings(wildcards)["checkpoint"]:
        return []
    return f"results/pixelcnnpp/{wildcards.dataset}/train.json"


def get_pixelcnnpp_figures():
    return expand(
        "figures/pixelcnnpp_{dataset}{part}.{ext}",
        dataset=config["pixelcnnpp"]["datasets"],
        part=("", "_samples"),
        ext=("png", "pdf"),
    )


# ---- end pixelcnnpp -------------------------------------------------------------------------
