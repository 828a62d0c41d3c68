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
from ffsolve.experiments import EXPERIMENTS, layout_of  # noqa: E402 (torch- and JAX-free)
from ffsolve.kit.runs import exact_run_names  # noqa: E402
from ffsolve.workflow.config import (  # noqa: E402
    LAYOUT_KEYS,
    canonical,
    coerce_to_schema,
    config_schema,
    dataset_settings,
    experiment_schema_path,
    override_schema,
)

SECTIONS = ("data",) + EXPERIMENTS
SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"


def _load_schema(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def _first_error(value, schema):
    return jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))


def schema_path(section):
    """The schema of one config section: an experiment's is config.schema.yaml in its own folder
    (src/ffsolve/experiments/<name>/), data's is workflow/schemas/data.schema.yaml."""
    if section in EXPERIMENTS:
        return experiment_schema_path(section, workflow.basedir)
    return SCHEMAS / f"{section}.schema.yaml"


# The top level: workflow/schemas/config.schema.yaml, which names no experiment, with one entry per
# name in EXPERIMENTS added (ffsolve.workflow.config.config_schema); any other key is refused by name.
CONFIG_SCHEMA = config_schema(_load_schema(SCHEMAS / "config.schema.yaml"), workflow.basedir)
# Nested --config values arrive as strings; they are read by the schema's types first.
_top = coerce_to_schema(dict(config), CONFIG_SCHEMA)
config.clear()
config.update(_top)
_error = _first_error(config, CONFIG_SCHEMA)
if _error is not None:
    _key = ".".join(map(str, _error.absolute_path))
    if not _key and _error.validator == "additionalProperties":
        _unknown = ", ".join(repr(key) for key in config if key not in CONFIG_SCHEMA["properties"])
        raise WorkflowError(f"unknown config key {_unknown}: {_error.message}; the top level takes "
                            f"{', '.join(CONFIG_SCHEMA['properties'])}")
    raise WorkflowError(f"config key '{_key}' is invalid: {_error.message}" if _key
                        else f"the config is invalid: {_error.message}")


def validate_section(name):
    """Check config[name] against its schema (schema_path) and each per_dataset.<dataset>
    override against the same settings. The schemas hold no defaults: every key comes from
    config/config.yaml, with the --configfile and --config values merged over it."""
    path = schema_path(name)
    if not path.exists():
        if config[name]:
            raise WorkflowError(
                f"config key '{name}': this experiment is not part of the workflow yet ({path} "
                "does not exist), so its settings would be ignored; remove the key"
            )
        return
    schema = _load_schema(path)
    config[name] = coerce_to_schema(config[name], schema)
    try:
        validate(config[name], schema=str(path))
    except WorkflowError as err:
        raise WorkflowError(f"config key '{name}' is invalid:\n{err}") from None
    overrides = config[name].get("per_dataset") or {}
    if overrides:
        per_dataset = override_schema(schema)
        for dataset, settings in overrides.items():
            overrides[dataset] = coerce_to_schema(settings or {}, per_dataset)
            error = _first_error(overrides[dataset], per_dataset)
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
# Scheduling (Snakemake's priority: among jobs ready at once, the higher first). Data first, then
# the trainings, the longest first, then the timed jobs: trainings take one core each and run side
# by side, a timed job takes every core; a timed job that starts first holds every training back,
# and a long training started last leaves the other core idle at its end (a fresh-clone run at
# bbbbf9e: training started 18 s late and one core idled 23 s). TRAIN_ORDER: the default's longest trainings,
# longest first (benchmarks/made/mnist/train.tsv and the others); any other trains after them.
# The timed jobs come next and run back to back; figures, notebooks and summaries (priority 0)
# wait for the last of them and then run side by side, instead of holding one core in the gaps
# between two timed jobs while the other waits.
PRIORITY_DATA = 50
PRIORITY_TIMED = 10
TRAIN_ORDER = ("made", "pixelcnnpp")


def train_priority(experiment):
    order = TRAIN_ORDER[::-1]
    return 20 + (order.index(experiment) + 1 if experiment in order else 0)


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


# ---- any experiment: its runs, results and figures from its layout (ffsolve.experiments.<name>.layout)
def get_runs(experiment):
    """The run names of `experiment`'s config section (the folders under results/<experiment>/<dataset>/)."""
    return layout_of(experiment).runs(config[experiment])


def run_outputs(experiment, kind):
    """results/<experiment>/{dataset}/<run>/<kind> for every run: a measure rule's outputs."""
    return expand(f"results/{experiment}/{{{{dataset}}}}/{{run}}/{kind}", run=get_runs(experiment))


def get_experiment_results(experiment, kind, datasets=None):
    """results/<experiment>/<dataset>/<run>/<kind> for the configured datasets (or `datasets`)."""
    if datasets is None:
        datasets = config[experiment]["datasets"]
    return get_results(experiment, datasets, get_runs(experiment), kind)


def figure_results(experiment, kind):
    """The records an experiment's figure reads for one dataset (an input function): the exact
    runs, or every run where the layout says its figure draws the frontier runs too."""
    runs = get_runs(experiment)
    if layout_of(experiment).FIGURE_RUNS == "exact":
        runs = exact_run_names(runs)
    return lambda wildcards: get_results(experiment, wildcards.dataset, runs, kind)


def job_settings(experiment, dataset, keys):
    """The settings of one dataset's job that reads only `keys` (its params: they alone rerun it)."""
    settings = settings_for(experiment, dataset)
    return {key: settings[key] for key in keys}


for _experiment in EXPERIMENTS:
    if experiment_active(_experiment):
        register_targets(metrics=get_experiment_results(_experiment, "metrics.json"),
                         figures=layout_of(_experiment).figures(config[_experiment]))

def checkpoint_path(experiment, dataset, filename):
    """The checkpoint of `experiment`'s model for `dataset`: the one its config names
    (`<experiment>.checkpoint`, where the section has that key), else its train rule's
    results/<experiment>/<dataset>/<filename>."""
    return (settings_for(experiment, dataset).get("checkpoint")
            or f"results/{experiment}/{dataset}/{filename}")


def get_checkpoint(experiment, filename):
    """An input function: the checkpoint a measure job samples (checkpoint_path for its dataset)."""
    return lambda wildcards: checkpoint_path(experiment, wildcards.dataset, filename)


def get_training_record(experiment, filename):
    """An input function: the train rule's record for a figure ([] when the config names a checkpoint)."""
    return lambda wildcards: ([] if settings_for(experiment, wildcards.dataset)["checkpoint"]
                              else f"results/{experiment}/{wildcards.dataset}/{filename}")


# ---- inputs one experiment's rule needs (Snakemake's lint wants every function here)
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
