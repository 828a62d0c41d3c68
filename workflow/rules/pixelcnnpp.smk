# PixelCNN++ sampling (paper §2.4-2.8): train (or load) a PixelCNN++ per dataset, then one timed
# harness job per dataset samples one seeded batch with every method in one process, on the same
# weights and noise, checks each against sequential, and a notebook draws the figures.
# Its runs, results and figures come from ffsolve.experiments.pixelcnnpp.layout (common.smk).
PIXELCNNPP = layout_of("pixelcnnpp")


rule pixelcnnpp_train:
    input:
        data="resources/data/{dataset}.npz",
    output:
        checkpoint="results/pixelcnnpp/{dataset}/model.msgpack",
        record="results/pixelcnnpp/{dataset}/train.json",
    log:
        "logs/pixelcnnpp/{dataset}/train.log",
    benchmark:
        "benchmarks/pixelcnnpp/{dataset}/train.tsv"
    params:
        # Exactly what the job reads, so that a changed setting retrains (Snakemake's params
        # trigger) and nothing else does (a new sampling method does not).
        settings=lambda wildcards: job_settings("pixelcnnpp", wildcards.dataset, PIXELCNNPP.TRAIN_KEYS),
        seed=config["seed"],
    wildcard_constraints:
        dataset="mnist|cifar10",
    threads: THREADS
    priority: train_priority("pixelcnnpp")
    resources:
        gpu=GPU,
    conda:
        ENVS["jax"]
    script:
        "../../scripts/experiment_job.py"


rule pixelcnnpp_measure:
    input:
        data="resources/data/{dataset}.npz",
        checkpoint=get_checkpoint("pixelcnnpp", "model.msgpack"),
    output:
        metrics=run_outputs("pixelcnnpp", "metrics.json"),
        traces=run_outputs("pixelcnnpp", "trace.npz"),
    log:
        "logs/pixelcnnpp/{dataset}/measure.log",
    benchmark:
        "benchmarks/pixelcnnpp/{dataset}/measure.tsv"
    params:
        settings=lambda wildcards: settings_for("pixelcnnpp", wildcards.dataset),
        runs=get_runs("pixelcnnpp"),
        timing=config["timing"],
        # auto's decisions file (one per experiment and dataset; common.smk autotune_file).
        autotune=autotune_file("pixelcnnpp"),
        device=config["device"],
        seed=config["seed"],
    wildcard_constraints:
        dataset="mnist|cifar10",
    threads: TIMED_THREADS
    priority: PRIORITY_TIMED
    resources:
        gpu=GPU,
    conda:
        ENVS["jax"]
    script:
        "../../scripts/experiment_job.py"


rule pixelcnnpp_figure:
    input:
        metrics=figure_results("pixelcnnpp", "metrics.json"),
        traces=figure_results("pixelcnnpp", "trace.npz"),
        training=get_training_record("pixelcnnpp", "train.json"),
        notebook="workflow/notebooks/pixelcnnpp.ipynb",
    output:
        png=report(
            "figures/pixelcnnpp_{dataset}.png",
            caption="../report/pixelcnnpp.rst",
            category="PixelCNN++ sampling",
        ),
        pdf="figures/pixelcnnpp_{dataset}.pdf",
        samples_png=report(
            "figures/pixelcnnpp_{dataset}_samples.png",
            caption="../report/pixelcnnpp_samples.rst",
            category="PixelCNN++ sampling",
        ),
        samples_pdf="figures/pixelcnnpp_{dataset}_samples.pdf",
        table="results/pixelcnnpp/{dataset}/times.md",
        notebook="results/notebooks/pixelcnnpp_{dataset}.ipynb",
    log:
        "logs/figures/pixelcnnpp_{dataset}.log",
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
            "table": output.table,
        },
    wildcard_constraints:
        dataset="mnist|cifar10",
    threads: 1
    conda:
        ENVS["notebook"]
    script:
        "../../scripts/render_notebook.py"
