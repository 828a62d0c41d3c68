# Every method on a random nonlinear triangular map: the workflow's smallest complete experiment,
# and the shape every experiment follows: one timed harness job per dataset, then a notebook.
# Its runs, results and figures come from ffsolve.experiments.<name>.layout (common.smk).



rule solver_demo_measure:
    output:
        metrics=run_outputs("solver_demo", "metrics.json"),
        traces=run_outputs("solver_demo", "trace.npz"),
    log:
        "logs/solver_demo/{dataset}/measure.log",
    benchmark:
        "benchmarks/solver_demo/{dataset}/measure.tsv"
    params:
        # Everything the job reads, so that a changed setting reruns it (Snakemake's params trigger).
        settings=lambda wildcards: settings_for("solver_demo", wildcards.dataset),
        runs=get_runs("solver_demo"),
        timing=config["timing"],
        # auto's decisions file (one per experiment and dataset; common.smk autotune_file).
        autotune=autotune_file("solver_demo"),
        seed=config["seed"],
    wildcard_constraints:
        dataset="tanh_map",
    threads: TIMED_THREADS
    priority: PRIORITY_TIMED
    conda:
        ENVS["torch"]
    script:
        "../../scripts/experiment_job.py"


rule solver_demo_figure:
    input:
        metrics=lambda wildcards: get_experiment_results("solver_demo", "metrics.json"),
        traces=lambda wildcards: get_experiment_results("solver_demo", "trace.npz"),
        notebook="workflow/notebooks/solver_demo.ipynb",
    output:
        png=report(
            "figures/solver_demo.png",
            caption="../report/solver_demo.rst",
            category="Solver demo",
        ),
        pdf="figures/solver_demo.pdf",
        notebook="results/notebooks/solver_demo.ipynb",
    log:
        "logs/figures/solver_demo.log",
    params:
        parameters=lambda wildcards, input, output: {
            "metrics": list(input.metrics),
            "traces": list(input.traces),
            "png": output.png,
            "pdf": output.pdf,
        },
    threads: 1
    conda:
        ENVS["notebook"]
    script:
        "../../scripts/render_notebook.py"
