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
