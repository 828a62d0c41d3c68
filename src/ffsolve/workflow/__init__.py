"""What serves only the Snakemake workflow, apart from the solvers and the shared kit: the
config helpers the Snakefile calls (:mod:`~ffsolve.workflow.config`), the config reference
generator (:mod:`~ffsolve.workflow.config_docs`), running library code as a rule's job
(:mod:`~ffsolve.workflow.jobs`), the notebook runner (:mod:`~ffsolve.workflow.notebooks`), the
cross-experiment figures (:mod:`~ffsolve.workflow.figures`), the results page
(:mod:`~ffsolve.workflow.results_page`, with :mod:`~ffsolve.workflow.gpu_records`) and the report
check (:mod:`~ffsolve.workflow.report_check`).

It may import the kit and the experiments; nothing in the solvers, the kit or the experiments
imports it (``tests/test_imports.py``)."""
