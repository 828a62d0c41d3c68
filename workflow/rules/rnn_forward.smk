# Long-sequence RNN evaluation (issue 12). The mnist case trains a GRU briefly on MNIST pixels in
# raster order; every case (the trained GRU, random GRU / softplus RNNs at chosen T and H) is one
# timed harness job that runs every recurrence method on the same weights and inputs in one
# process and checks each against the sequential loop; one notebook draws every case's figures.
RNN_FORWARD_TORCH_CASES = "mnist|(?:gru|softplus)_T[1-9][0-9]*_H[1-9][0-9]*"
RNN_FORWARD_JAX_CASES = "(?:gru|softplus)_T[1-9][0-9]*_H[1-9][0-9]*_jax"


if experiment_active("rnn_forward"):
    register_targets(
        metrics=get_rnn_forward_results(config["rnn_forward"]["datasets"], "metrics.json"),
        figures=get_rnn_forward_figures(),
    )


rule rnn_forward_train:
    input:
        dataset="resources/data/mnist.npz",
    output:
        checkpoint="results/rnn_forward/mnist/model.pt",
        metrics="results/rnn_forward/mnist/train.json",
    log:
        "logs/rnn_forward/mnist/train.log",
    benchmark:
        "benchmarks/rnn_forward/mnist/train.tsv"
    params:
        # Everything the job reads, so that a changed setting retrains (Snakemake's params trigger).
        settings=rnn_forward_settings("mnist", RNN_FORWARD_TRAIN_KEYS),
        seed=config["seed"],
        device=config["device"],
    threads: THREADS
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/rnn_forward_train.py"


rule rnn_forward_measure:
    input:
        unpack(get_rnn_forward_inputs),
    output:
        metrics=expand("results/rnn_forward/{{dataset}}/{run}/metrics.json", run=get_rnn_forward_runs()),
        traces=expand("results/rnn_forward/{{dataset}}/{run}/trace.npz", run=get_rnn_forward_runs()),
    log:
        "logs/rnn_forward/{dataset}/measure.log",
    benchmark:
        "benchmarks/rnn_forward/{dataset}/measure.tsv"
    params:
        settings=lambda wildcards: rnn_forward_settings(wildcards.dataset, RNN_FORWARD_MEASURE_KEYS),
        runs=get_rnn_forward_runs(),
        timing=config["timing"],
        # auto's decisions file (one per experiment and dataset; common.smk autotune_file).
        autotune=autotune_file("rnn_forward"),
        seed=config["seed"],
        device=config["device"],
    wildcard_constraints:
        dataset=RNN_FORWARD_TORCH_CASES,
    # Every core: the timed job runs alone, so no neighbour job skews its clocks.
    threads: TIMED_THREADS
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/rnn_forward_measure.py"


use rule rnn_forward_measure as rnn_forward_measure_jax with:
    # The same case in JAX (same weights and inputs as the torch case of that cell, T and H).
    wildcard_constraints:
        dataset=RNN_FORWARD_JAX_CASES,
    conda:
        ENVS["jax"]


rule rnn_forward_figure:
    input:
        metrics=get_rnn_forward_results(config["rnn_forward"]["datasets"], "metrics.json"),
        traces=get_rnn_forward_results(config["rnn_forward"]["datasets"], "trace.npz"),
        training=get_rnn_forward_training,
        notebook="workflow/notebooks/rnn_forward.ipynb",
    output:
        png=report("figures/rnn_forward.png", caption="../report/rnn_forward.rst", category="RNN evaluation"),
        pdf="figures/rnn_forward.pdf",
        frontier_png=report(
            "figures/rnn_forward_frontier.png",
            caption="../report/rnn_forward_frontier.rst",
            category="RNN evaluation",
        ),
        frontier_pdf="figures/rnn_forward_frontier.pdf",
        notebook="results/notebooks/rnn_forward.ipynb",
    log:
        "logs/figures/rnn_forward.log",
    params:
        parameters=lambda wildcards, input, output: {
            "metrics": list(input.metrics),
            "traces": list(input.traces),
            "training": str(input.training[0]) if input.training else "",
            "png": output.png,
            "pdf": output.pdf,
            "frontier_png": output.frontier_png,
            "frontier_pdf": output.frontier_pdf,
        },
    threads: 1
    conda:
        ENVS["notebook"]
    script:
        "../../scripts/render_notebook.py"
