# The price of each guarantee (issue 23): the models other experiments train (the rnn_forward GRU,
# the PixelCNN++), sampled by ffsolve.sample_autoregressive's four methods on the same seeds, one
# timed harness job per model; one notebook draws the steps against position and the tables.
# Its runs, results and figures come from ffsolve.experiments.speculative.layout (common.smk).
SPECULATIVE = layout_of("speculative")


rule speculative_measure:
    input:
        # The source experiment's checkpoint (its train rule's, or the one its config names).
        checkpoint=lambda wildcards: checkpoint_path(*SPECULATIVE.source_of(wildcards.dataset)),
    output:
        metrics=run_outputs("speculative", "metrics.json"),
        traces=run_outputs("speculative", "trace.npz"),
    log:
        "logs/speculative/{dataset}/measure.log",
    benchmark:
        "benchmarks/speculative/{dataset}/measure.tsv"
    params:
        settings=lambda wildcards: job_settings("speculative", wildcards.dataset, SPECULATIVE.MEASURE_KEYS),
        runs=get_runs("speculative"),
        timing=config["timing"],
        seed=config["seed"],
        device=config["device"],
    wildcard_constraints:
        dataset="rnn_forward_mnist",
    # Every core: the timed job runs alone, so no neighbour job skews its clocks.
    threads: TIMED_THREADS
    priority: PRIORITY_TIMED
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/experiment_job.py"


use rule speculative_measure as speculative_measure_jax with:
    # The PixelCNN++ is a Flax model: the same job in the JAX env (the sampler on NumPy arrays).
    wildcard_constraints:
        dataset="pixelcnnpp_mnist",
    conda:
        ENVS["jax"]


rule speculative_figure:
    input:
        metrics=get_experiment_results("speculative", "metrics.json"),
        traces=get_experiment_results("speculative", "trace.npz"),
        notebook="workflow/notebooks/speculative.ipynb",
    output:
        png=report("figures/speculative.png", caption="../report/speculative.rst", category="Speculative sampling"),
        pdf="figures/speculative.pdf",
        table="results/speculative/steps.md",
        notebook="results/notebooks/speculative.ipynb",
    log:
        "logs/figures/speculative.log",
    params:
        parameters=lambda wildcards, input, output: {
            "metrics": list(input.metrics),
            "traces": list(input.traces),
            "png": output.png,
            "pdf": output.pdf,
            "table": output.table,
        },
    threads: 1
    conda:
        ENVS["notebook"]
    script:
        "../../scripts/render_notebook.py"
