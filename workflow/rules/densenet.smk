# DenseNet inference by Jacobi iteration over layers (paper §2.2): train the small DenseNet-BC on
# MNIST (embedded default) or take DenseNet-201, run every method in one timed process per
# dataset (the shared harness), and draw logit error and top-5 disagreement against steps.
# Its runs, results and figures come from ffsolve.experiments.densenet.layout (common.smk).


rule densenet_train:
    input:
        data="resources/data/mnist.npz",
    output:
        model="results/densenet/mnist/model.pt",
        summary="results/densenet/mnist/training.json",
    log:
        "logs/densenet/mnist/train.log",
    benchmark:
        "benchmarks/densenet/mnist/train.tsv"
    params:
        # Listed so that a changed setting retrains (Snakemake's params trigger).
        model=lambda wildcards: settings_for("densenet", "mnist")["model"],
        train=lambda wildcards: settings_for("densenet", "mnist")["train"],
        seed=config["seed"],
    threads: THREADS
    priority: train_priority("densenet")
    # No gpu resource: the small DenseNet trains on the CPU whatever `device` says.
    conda:
        ENVS["torch"]
    script:
        "../../scripts/experiment_job.py"


# One job per dataset runs every method: all runs are timed in the same process on the same
# weights and inputs, repeats interleaved (DESIGN.md §7), so it takes every core.
rule densenet_measure:
    input:
        unpack(get_densenet_inputs),
    output:
        metrics=run_outputs("densenet", "metrics.json"),
        traces=run_outputs("densenet", "trace.npz"),
    log:
        "logs/densenet/{dataset}/measure.log",
    benchmark:
        "benchmarks/densenet/{dataset}/measure.tsv"
    params:
        # Everything the job reads, so that a changed setting reruns it (Snakemake's params trigger).
        settings=lambda wildcards: settings_for("densenet", wildcards.dataset),
        runs=get_runs("densenet"),
        image_folder=lambda wildcards: (
            config["data"]["imagenet_val"]["folder"] if wildcards.dataset == "imagenet_val" else None
        ),
        weights_dir="resources/weights",
        timing=config["timing"],
        # auto's decisions file (one per experiment and dataset; common.smk autotune_file).
        autotune=autotune_file("densenet"),
        device=config["device"],
        seed=config["seed"],
    wildcard_constraints:
        dataset="mnist|imagenet_val|random_speed_only",
    threads: TIMED_THREADS
    priority: PRIORITY_TIMED
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/experiment_job.py"


rule densenet_figure:
    input:
        metrics=figure_results("densenet", "metrics.json"),
        traces=figure_results("densenet", "trace.npz"),
        notebook="workflow/notebooks/densenet.ipynb",
    output:
        png=report(
            "figures/densenet_{dataset}.png",
            caption="../report/densenet.rst",
            category="DenseNet",
        ),
        pdf="figures/densenet_{dataset}.pdf",
        table="results/densenet/{dataset}/table.md",
        notebook="results/notebooks/densenet_{dataset}.ipynb",
    log:
        "logs/figures/densenet_{dataset}.log",
    params:
        parameters=lambda wildcards, input, output: {
            "metrics": list(input.metrics),
            "traces": list(input.traces),
            "png": output.png,
            "pdf": output.pdf,
            "table": output.table,
        },
    wildcard_constraints:
        dataset="mnist|imagenet_val|random_speed_only",
    threads: 1
    conda:
        ENVS["notebook"]
    script:
        "../../scripts/render_notebook.py"
