# MADE sampling (paper §2.3): train (or load) a MADE per dataset, then one timed harness job per
# dataset samples one seeded batch with every method on the same weights and noise, checks each
# against sequential bit for bit, and the notebook draws the convergence figure and sample grid.
# Its runs, results and figures come from ffsolve.experiments.made.layout (common.smk).
MADE = layout_of("made")


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
        settings=lambda wildcards: job_settings("made", wildcards.dataset, MADE.TRAIN_KEYS),
        seed=config["seed"],
        device=config["device"],
    wildcard_constraints:
        dataset="mnist|cifar10",
    threads: THREADS
    priority: train_priority("made")
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/experiment_job.py"


rule made_measure:
    input:
        checkpoint=get_checkpoint("made", "model.pt"),
    output:
        metrics=run_outputs("made", "metrics.json"),
        traces=run_outputs("made", "trace.npz"),
    log:
        "logs/made/{dataset}/measure.log",
    benchmark:
        "benchmarks/made/{dataset}/measure.tsv"
    params:
        settings=lambda wildcards: job_settings("made", wildcards.dataset, MADE.MEASURE_KEYS),
        runs=get_runs("made"),
        timing=config["timing"],
        # auto's decisions file (one per experiment and dataset; common.smk autotune_file).
        autotune=autotune_file("made"),
        seed=config["seed"],
        device=config["device"],
    wildcard_constraints:
        dataset="mnist|cifar10",
    # Every core: the timed job runs alone, so no neighbour job skews its clocks.
    threads: TIMED_THREADS
    priority: PRIORITY_TIMED
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/experiment_job.py"


rule made_figure:
    input:
        metrics=figure_results("made", "metrics.json"),
        traces=figure_results("made", "trace.npz"),
        training=get_training_record("made", "train.json"),
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
