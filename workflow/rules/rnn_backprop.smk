# RNN backpropagation through time (paper §2.1): one training run per backward method
# (sequential BPTT, Jacobi budgets, Jacobi with a tolerance, exact parallel scans), gradient
# convergence traces at the start and end of training, and the figures.


if experiment_active("rnn_backprop"):
    register_targets(
        metrics=get_rnn_backprop_results("metrics.json"),
        figures=get_rnn_backprop_figures(),
    )


rule rnn_backprop_train:
    input:
        dataset="resources/data/{dataset}.npz",
    output:
        metrics="results/rnn_backprop/{dataset}/{run}/metrics.json",
        training="results/rnn_backprop/{dataset}/{run}/training.npz",
        weights="results/rnn_backprop/{dataset}/{run}/weights.npz",
    log:
        "logs/rnn_backprop/{dataset}/{run}.log",
    benchmark:
        "benchmarks/rnn_backprop/{dataset}/{run}.tsv"
    params:
        # Listed so that a changed setting reruns the job (Snakemake's params trigger).
        settings=lambda wildcards: config["rnn_backprop"],
        timing=lambda wildcards: config["timing"],
        seed=lambda wildcards: config["seed"],
        device=lambda wildcards: config["device"],
    wildcard_constraints:
        dataset="mnist",
        run="sequential|jacobi_k[1-9][0-9]*|jacobi_tol|scan_hillis_steele|scan_odd_even",
    threads: THREADS
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/rnn_backprop_train.py"


rule rnn_backprop_convergence:
    input:
        dataset="resources/data/{dataset}.npz",
        # "At the end of training" means the weights after sequential BPTT's first repeat.
        weights="results/rnn_backprop/{dataset}/sequential/weights.npz",
    output:
        convergence="results/rnn_backprop/{dataset}/convergence.npz",
    log:
        "logs/rnn_backprop/{dataset}/convergence.log",
    benchmark:
        "benchmarks/rnn_backprop/{dataset}/convergence.tsv"
    params:
        settings=lambda wildcards: config["rnn_backprop"],
        seed=lambda wildcards: config["seed"],
    wildcard_constraints:
        dataset="mnist",
    threads: THREADS
    resources:
        gpu=GPU,
    conda:
        ENVS["torch"]
    script:
        "../../scripts/rnn_backprop_convergence.py"


rule rnn_backprop_figure:
    input:
        metrics=lambda wildcards: get_rnn_backprop_results("metrics.json"),
        training=lambda wildcards: get_rnn_backprop_results("training.npz"),
        convergence=lambda wildcards: get_rnn_backprop_convergence(),
        notebook="workflow/notebooks/rnn_backprop.ipynb",
    output:
        png=report(
            "figures/rnn_backprop.png",
            caption="../report/rnn_backprop.rst",
            category="RNN backprop",
        ),
        pdf="figures/rnn_backprop.pdf",
        iter_png=report(
            "figures/rnn_backprop_iter.png",
            caption="../report/rnn_backprop_iter.rst",
            category="RNN backprop",
        ),
        iter_pdf="figures/rnn_backprop_iter.pdf",
        convergence_png=report(
            "figures/rnn_backprop_convergence.png",
            caption="../report/rnn_backprop_convergence.rst",
            category="RNN backprop",
        ),
        convergence_pdf="figures/rnn_backprop_convergence.pdf",
        notebook="results/notebooks/rnn_backprop.ipynb",
    log:
        "logs/figures/rnn_backprop.log",
    params:
        parameters=lambda wildcards, input, output: {
            "metrics": list(input.metrics),
            "training": list(input.training),
            "convergence": input.convergence,
            "png": output.png,
            "pdf": output.pdf,
            "iter_png": output.iter_png,
            "iter_pdf": output.iter_pdf,
            "convergence_png": output.convergence_png,
            "convergence_pdf": output.convergence_pdf,
        },
    threads: 1
    conda:
        ENVS["notebook"]
    script:
        "../../scripts/render_notebook.py"
