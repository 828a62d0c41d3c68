# Every method on a random nonlinear triangular map: the workflow's smallest complete experiment.


if experiment_active("solver_demo"):
    register_targets(
        metrics=get_solver_demo_results("metrics.json"),
        figures=expand("figures/solver_demo.{ext}", ext=("png", "pdf")),
    )


rule solver_demo_run:
    output:
        metrics="results/solver_demo/{dataset}/{run}/metrics.json",
        trace="results/solver_demo/{dataset}/{run}/trace.npz",
    log:
        "logs/solver_demo/{dataset}/{run}.log",
    benchmark:
        "benchmarks/solver_demo/{dataset}/{run}.tsv"
    params:
        # Listed so that a changed setting reruns the job (Snakemake's params trigger).
        settings=lambda wildcards: config["solver_demo"],
        timing=lambda wildcards: config["timing"],
        seed=config["seed"],
    wildcard_constraints:
        dataset="tanh_map",
    threads: 1
    conda:
        ENVS["torch"]
    script:
        "../../scripts/solver_demo.py"


rule solver_demo_figure:
    input:
        metrics=lambda wildcards: get_solver_demo_results("metrics.json"),
        traces=lambda wildcards: get_solver_demo_results("trace.npz"),
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
