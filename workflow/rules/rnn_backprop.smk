# RNN backpropagation through time (paper §2.1). Per dataset one timed harness job trains the RNN
# for `steps` SGD steps with every backward method (sequential BPTT, Jacobi budgets, Jacobi to the
# end and to a tolerance, the scans) from the same weights and data order, all in one process,
# and writes every metrics.json (quantity train_<steps>_steps), the loss curves of the timed
# calls and BPTT's trained weights; an untimed job draws the gradient-convergence traces at the
# initial and at those weights; then the figures.
# Its runs, results and figures come from ffsolve.experiments.rnn_backprop.layout (common.smk).



rule rnn_backprop_measure:
    input:
        dataset="resources/data/{dataset}.npz",
    output:
        metrics=run_outputs("rnn_backprop", "metrics.json"),
        traces=run_outputs("rnn_backprop", "trace.npz"),
        weights="results/rnn_backprop/{dataset}/trained_weights.npz",
    log:
        "logs/rnn_backprop/{dataset}/measure.log",
    benchmark:
        "benchmarks/rnn_backprop/{dataset}/measure.tsv"
    params:
        # Everything the job reads, so that a changed setting reruns it (Snakemake's params trigger).
        settings=lambda wildcards: settings_for("rnn_backprop", wildcards.dataset),
        runs=get_runs("rnn_backprop"),
        # The compute threads and auto's settings: the job's own repeats and warm-up are
        # rnn_backprop settings.
        timing={key: config["timing"][key] for key in ("threads", "auto_allow_within_tolerance",
                                                         "auto_replay")},
        # auto's decisions file (one per experiment and dataset; common.smk autotune_file).
        autotune=autotune_file("rnn_backprop"),
        seed=config["seed"],
        device=config["device"],
    wildcard_constraints:
        dataset="mnist",
    threads: TIMED_THREADS
    priority: PRIORITY_TIMED
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/experiment_job.py"


rule rnn_backprop_convergence:
    # Gradient error per parallel step (float64, untimed) at the start and the end of training.
    input:
        dataset="resources/data/{dataset}.npz",
        weights="results/rnn_backprop/{dataset}/trained_weights.npz",
    output:
        convergence="results/rnn_backprop/{dataset}/convergence.npz",
    log:
        "logs/rnn_backprop/{dataset}/convergence.log",
    benchmark:
        "benchmarks/rnn_backprop/{dataset}/convergence.tsv"
    params:
        settings=lambda wildcards: settings_for("rnn_backprop", wildcards.dataset),
        seed=config["seed"],
        device=config["device"],
    wildcard_constraints:
        dataset="mnist",
    threads: THREADS
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/experiment_job.py"


rule rnn_backprop_figure:
    input:
        metrics=figure_results("rnn_backprop", "metrics.json"),
        traces=figure_results("rnn_backprop", "trace.npz"),
        convergence="results/rnn_backprop/{dataset}/convergence.npz",
        notebook="workflow/notebooks/rnn_backprop.ipynb",
    output:
        png=report(
            "figures/rnn_backprop_{dataset}.png",
            caption="../report/rnn_backprop.rst",
            category="RNN backprop",
        ),
        pdf="figures/rnn_backprop_{dataset}.pdf",
        iter_png=report(
            "figures/rnn_backprop_{dataset}_iter.png",
            caption="../report/rnn_backprop_iter.rst",
            category="RNN backprop",
        ),
        iter_pdf="figures/rnn_backprop_{dataset}_iter.pdf",
        convergence_png=report(
            "figures/rnn_backprop_{dataset}_convergence.png",
            caption="../report/rnn_backprop_convergence.rst",
            category="RNN backprop",
        ),
        convergence_pdf="figures/rnn_backprop_{dataset}_convergence.pdf",
        notebook="results/notebooks/rnn_backprop_{dataset}.ipynb",
    log:
        "logs/figures/rnn_backprop_{dataset}.log",
    params:
        parameters=lambda wildcards, input, output: {
            "metrics": list(input.metrics),
            "traces": list(input.traces),
            "convergence": input.convergence,
            "png": output.png,
            "pdf": output.pdf,
            "iter_png": output.iter_png,
            "iter_pdf": output.iter_pdf,
            "convergence_png": output.convergence_png,
            "convergence_pdf": output.convergence_pdf,
        },
    wildcard_constraints:
        dataset="mnist",
    threads: 1
    conda:
        ENVS["notebook"]
    script:
        "../../scripts/render_notebook.py"
