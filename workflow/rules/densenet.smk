# DenseNet inference by Jacobi iteration over layers (paper §2.2): train the small DenseNet-BC on
# MNIST (embedded default) or take DenseNet-201, run every method in one process per dataset, and
# draw logit error and top-5 disagreement against iterations and measured time.


if experiment_active("densenet"):
    register_targets(
        metrics=get_densenet_results(config["densenet"]["datasets"], "metrics.json"),
        figures=get_densenet_figures(),
    )


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
        settings=lambda wildcards: config["densenet"]["mnist"],
        seed=config["seed"],
    threads: THREADS
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/densenet_train.py"


# One job per dataset runs every method: sequential and parallel runs are timed in the same
# process on the same weights and inputs (DESIGN.md §7).
rule densenet_solve:
    input:
        unpack(get_densenet_inputs),
    output:
        metrics=expand(
            "results/densenet/{{dataset}}/{run}/metrics.json", run=get_densenet_runs()
        ),
        trace=expand("results/densenet/{{dataset}}/{run}/trace.npz", run=get_densenet_runs()),
    log:
        "logs/densenet/{dataset}/solve.log",
    benchmark:
        "benchmarks/densenet/{dataset}/solve.tsv"
    params:
        settings=lambda wildcards: config["densenet"],
        images=lambda wildcards: config["data"]["imagenet_val"],
        timing=lambda wildcards: config["timing"],
        device=config["device"],
        seed=config["seed"],
    wildcard_constraints:
        dataset="mnist|imagenet_val|random_speed_only",
    threads: THREADS
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/densenet_solve.py"


rule densenet_figure:
    input:
        metrics=lambda wildcards: get_densenet_results(wildcards.dataset, "metrics.json"),
        traces=lambda wildcards: get_densenet_results(wildcards.dataset, "trace.npz"),
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
