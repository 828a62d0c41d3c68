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
from ffsolve.kit.runs import run_names  # noqa: E402
from ffsolve.workflow_config import (  # noqa: E402
    LAYOUT_KEYS,
    canonical,
    coerce_to_schema,
    dataset_settings,
    override_schema,
)

SECTIONS = ("data", "solver_demo", "made", "pixelcnnpp", "densenet", "rnn_backprop")
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
    """Check config[name] against workflow/schemas/<name>.schema.yaml, fill its defaults, and
    check each per_dataset.<dataset> override against the same settings (no defaults there)."""
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
                where = ".".join(str(part) for part in error.absolute_path)
                raise WorkflowError(
                    f"config key '{name}.per_dataset.{dataset}{'.' + where if where else ''}' "
                    f"is invalid: {error.message}"
                )


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


def get_all_metrics():
    """Every metrics.json the current config asks for (the input of results/summary.csv)."""
    return list(TARGETS["metrics"])


def get_figures():
    overview = ["results/summary.csv", "figures/speedups.md", "figures/speedups.png"]
    return overview + TARGETS["figures"]


def get_all_outputs():
    return get_figures() + get_all_metrics()
