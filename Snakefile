# ffsolve: Song et al. (ICML 2021), "Accelerating Feedforward Computation via Parallel Nonlinear
# Equation Solving", regenerated. This file is a table of contents; the rules live in
# workflow/rules/, one file per stage, and every target list is built in common.smk.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"


# One rule file per experiment, workflow/rules/<name>.smk, for every name in
# ffsolve.experiments.EXPERIMENTS (imported by common.smk): a new experiment is not named here.
for _name in EXPERIMENTS:
    include: f"workflow/rules/{_name}.smk"


include: "workflow/rules/summary.smk"


rule all:
    input:
        get_all_outputs(),
    default_target: True


rule figures:
    input:
        get_figures(),
