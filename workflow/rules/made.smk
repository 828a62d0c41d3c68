# MADE sampling (paper §2.3): train (or load) a MADE per dataset, sample one seeded batch with every
# method, check each against sequential, and draw the convergence figure and the sample grid.


if experiment_active("made"):
    register_targets(
        metrics=get_made_results(config["made"]["datasets"], "metrics.json"),
        figures=get_made_figures(),
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
        # Listed so that a changed setting retrains (Snakemake's params trigger).
        hidden_sizes=lambda wildcards: config["made"]["hidden_sizes"],
        logit_lambda=lambda wildcards: config["made"]["logit_lambda"][wildcards.dataset],
        train=lambda wildcards: config["made"]["train"],
        seed=config["seed"],
    wildcard_constraints:
        dataset="mnist|cifar10",
    threads: THREADS
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/made_train.py"


rule made_sample:
    input:
        checkpoint=get_made_checkpoint,
    output:
        metrics="results/made/{dataset}/{run}/metrics.json",
        trace="results/made/{dataset}/{run}/trace.npz",
    log:
        "logs/made/{dataset}/{run}.log",
    benchmark:
        "benchmarks/made/{dataset}/{run}.tsv"
    params:
        sample=lambda wildcards: config["made"]["sample"],
        logit_lambda=lambda wildcards: config["made"]["logit_lambda"][wildcards.dataset],
        timing=lambda wildcards: config["timing"],
        device=config["device"],
        seed=config["seed"],
    wildcard_constraints:
        dataset="mnist|cifar10",
        run="sequential|jacobi|(gs_jacobi|jacobi_gs)_b[1-9][0-9]*",
    threads: THREADS
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/made_sample.py"


rule made_figure:
    input:
        metrics=lambda wildcards: get_made_results(wildcards.dataset, "metrics.json"),
        traces=lambda wildcards: get_made_results(wildcards.dataset, "trace.npz"),
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
