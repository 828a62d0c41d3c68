# One table of every run: results/summary.csv (DESIGN.md §6).


rule summary:
    input:
        metrics=get_all_metrics(),
    output:
        summary="results/summary.csv",
    log:
        "logs/summary.log",
    threads: 1
    conda:
        ENVS["notebook"]
    script:
        "../../scripts/summarize.py"


rule speedups:
    input:
        summary="results/summary.csv",
        paper="workflow/resources/paper_numbers.yaml",
    output:
        table="figures/speedups.md",
        png=report(
            "figures/speedups.png",
            caption="../report/speedups.rst",
            category="Overview",
        ),
        pdf="figures/speedups.pdf",
    log:
        "logs/figures/speedups.log",
    threads: 1
    conda:
        ENVS["notebook"]
    script:
        "../../scripts/speedups.py"


# Every measured number on one page, stamped with the commit, date, machine and config
# (ffsolve.workflow.results_page); a copy from a clean run of the default is committed as docs/results.md.
register_targets(figures=["results/results.md"])


rule results_page:
    input:
        summary="results/summary.csv",
        paper="workflow/resources/paper_numbers.yaml",
    output:
        page="results/results.md",
        stamp="results/stamp.json",
    params:
        config=config,
        configfiles=[str(path) for path in workflow.configfiles],
    log:
        "logs/results_page.log",
    threads: 1
    conda:
        ENVS["notebook"]
    script:
        "../../scripts/results_page.py"


# The speed/error frontier of the runs at a stopping tolerance (frontier_tols): steps and time
# against the largest difference from the sequential result (ffsolve.kit.frontier).
register_targets(figures=["figures/frontier.png", "figures/frontier.pdf"])


rule frontier:
    input:
        summary="results/summary.csv",
    output:
        png=report(
            "figures/frontier.png",
            caption="../report/frontier.rst",
            category="Overview",
        ),
        pdf="figures/frontier.pdf",
    log:
        "logs/figures/frontier.log",
    threads: 1
    conda:
        ENVS["notebook"]
    script:
        "../../scripts/frontier.py"
