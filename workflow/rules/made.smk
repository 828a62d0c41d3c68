# MADE sampling (paper §2.3): train (or load) a MADE per dataset, then one timed harness job per
# dataset samples one seeded batch with every method on the same weights and noise, checks each
# against sequential bit for bit, and the notebook draws the convergence figure and sample grid.


if experiment_active("made"):
    register_targets(
        metrics=get_made_results(config["made"]["datasets"], "metrics.json"),
        figures=expand(
            "figures/made_{dataset}{part}.{ext}",
            dataset=config["made"]["datasets"],
            part=("", "_samples"),
            ext=("png", "pdf"),
        ),
    )


rule made_train:
    input:
        dataset="resources/data/{dataset}.npz",
    output:
        checkpoint="results/made/{dataset}/model.pt",
        metrics="results/made/{dataset}/train.json",
    log:
        "logs/made/{dataset}/train.log",
    benchmark:
        "benchmarks/made/{dataset}/train.tsv"
    params:
        # Everything the job reads, so that a changed setting retrains (Snakemake's params trigger).
        settings=lambda wildcards: made_settings(wildcards.dataset, MADE_TRAIN_KEYS),
        seed=config["seed"],
        device=config["device"],
    wildcard_constraints:
        dataset="mnist|cifar10",
    threads: THREADS
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/made_train.py"


rule made_measure:
    input:
        checkpoint=get_made_checkpoint,
    output:
        metrics=expand("results/made/{{dataset}}/{run}/metrics.json", run=get_made_runs()),
        traces=expand("results/made/{{dataset}}/{run}/trace.npz", run=get_made_runs()),
    log:
        "logs/made/{dataset}/measure.log",
    benchmark:
        "benchmarks/made/{dataset}/measure.tsv"
    params:
        settings=lambda wildcards: made_settings(wildcards.dataset, MADE_MEASURE_KEYS),
        runs=get_made_runs(),
        timing=config["timing"],
        # auto's decisions file (one per experiment and dataset; common.smk autotune_file).
        autotune=autotune_file("made"),
        seed=config["seed"],
        device=config["device"],
    wildcard_constraints:
        dataset="mnist|cifar10",
    # Every core: the timed job runs alone, so no neighbour job skews its clocks.
    threads: TIMED_THREADS
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/made_measure.py"


rule made_figure:
    input:
        metrics=lambda wildcards: get_made_figure_results(wildcards.dataset, "metrics.json"),
        traces=lambda wildcards: get_made_figure_results(wildcards.dataset, "trace.npz"),
        training=get_made_training,
        notebook="workflow/notebooks/made.ipynb",
    output:
        png=report(
            "figures/made_{dataset}.png",
            caption="../report/made.rst",
            category="MADE sampling",
        ),
        pdf="figures/made_{dataset}.pdf",
        samples_png=report(
            "figures/made_{dataset}_samples.png",
            caption="../report/made_samples.rst",
            category="MADE sampling",
        ),
        samples_pdf="figures/made_{dataset}_samples.pdf",
        notebook="results/notebooks/made_{dataset}.ipynb",
    log:
        "logs/figures/made_{dataset}.log",
    params:
        parameters=lambda wildcards, input, output: {
            "dataset": wildcards.dataset,
            "metrics": list(input.metrics),
            "traces": list(input.traces),
            "training": str(input.training) if input.training else "",
            "png": output.png,
            "pdf": output.pdf,
            "samples_png": output.samples_png,
            "samples_pdf": output.samples_pdf,
        },
    wildcard_constraints:
        dataset="mnist|cifar10",
    threads: 1
    conda:
        ENVS["notebook"]
    script:
        "../../scripts/render_notebook.py"
