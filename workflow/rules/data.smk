# Datasets, prepared once as resources/data/<name>.npz from the source the config names.


rule data_prepare:
    input:
        embedded=get_embedded_data_files,
    output:
        dataset="resources/data/{dataset}.npz",
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "benchmarks/data/{dataset}.tsv"
    priority: PRIORITY_DATA
    params:
        settings=lambda wildcards: config["data"][wildcards.dataset],
        download_root="resources/raw",
    wildcard_constraints:
        dataset="mnist|cifar10",
    threads: 1
    conda:
        ENVS["torch"]
    script:
        "../../scripts/prepare_data.py"
