# Long-sequence RNN evaluation (issue 12). The mnist case trains a GRU briefly on MNIST pixels in
# raster order; every case (the trained GRU, random GRU / softplus RNNs at chosen T and H) is one
# timed harness job that runs every recurrence method on the same weights and inputs in one
# process and checks each against the sequential loop; one notebook draws every case's figures.
RNN_FORWARD_TORCH_CASES = "mnist|(?:gru|softplus)_T[1-9][0-9]*_H[1-9][0-9]*"
RNN_FORWARD_JAX_CASES = "(?:gru|softplus)_T[1-9][0-9]*_H[1-9][0-9]*_jax"
# Its runs, results and figures come from ffsolve.experiments.rnn_forward.layout (common.smk).
RNN_FORWARD = layout_of("rnn_forward")


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
        settings=job_settings("rnn_forward", "mnist", RNN_FORWARD.TRAIN_KEYS),
        seed=config["seed"],
        device=config["device"],
    threads: THREADS
    priority: train_priority("rnn_forward")
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/experiment_job.py"


rule rnn_forward_measure:
    input:
        # The trained case reads its checkpoint and the test images; random cases read nothing.
        unpack(lambda wildcards: {"checkpoint": "results/rnn_forward/mnist/model.pt",
                                  "data": "resources/data/mnist.npz"} if wildcards.dataset == "mnist" else {}),
    output:
        metrics=run_outputs("rnn_forward", "metrics.json"),
        traces=run_outputs("rnn_forward", "trace.npz"),
    log:
        "logs/rnn_forward/{dataset}/measure.log",
    benchmark:
        "benchmarks/rnn_forward/{dataset}/measure.tsv"
    params:
        settings=lambda wildcards: job_settings("rnn_forward", wildcards.dataset, RNN_FORWARD.MEASURE_KEYS),
        runs=get_runs("rnn_forward"),
        timing=config["timing"],
        # auto's decisions file (one per experiment and dataset; common.smk autotune_file).
        autotune=autotune_file("rnn_forward"),
        seed=config["seed"],
        device=config["device"],
    wildcard_constraints:
        dataset=RNN_FORWARD_TORCH_CASES,
    # Every core: the timed job runs alone, so no neighbour job skews its clocks.
    threads: TIMED_THREADS
    priority: PRIORITY_TIMED
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/experiment_job.py"


use rule rnn_forward_measure as rnn_forward_measure_jax with:
    # The same case in JAX (same weights and inputs as the torch case of that cell, T and H).
    wildcard_constraints:
        dataset=RNN_FORWARD_JAX_CASES,
    conda:
        ENVS["jax"]


rule rnn_forward_figure:
    input:
        metrics=get_experiment_results("rnn_forward", "metrics.json"),
        traces=get_experiment_results("rnn_forward", "trace.npz"),
        # The training record when the mnist case is configured.
        training=["results/rnn_forward/mnist/train.json"] if "mnist" in config["rnn_forward"]["datasets"] else [],
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
